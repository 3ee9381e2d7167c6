{{/*
Chart name, truncated to the 63 characters a label value may have.
*/}}
{{- define "extractedprism.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: fullnameOverride, else the release name when it already contains
the chart name, else "<release>-<chart>".
*/}}
{{- define "extractedprism.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "extractedprism.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "extractedprism.selectorLabels" -}}
app.kubernetes.io/name: {{ include "extractedprism.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "extractedprism.labels" -}}
helm.sh/chart: {{ include "extractedprism.chart" . }}
{{ include "extractedprism.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The ServiceAccount: the chart's own, or serviceAccount.name. With
create=false and no name (allowed only without discovery, see validate) the
pod uses the namespace's default ServiceAccount and nothing is bound to it.
*/}}
{{- define "extractedprism.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "extractedprism.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
A probe from values, its httpGet port defaulting to healthPort, so that the
probe follows the health server when healthPort changes. Call with
(list . probe); renders nothing for an empty probe.
*/}}
{{- define "extractedprism.probe" -}}
{{- $root := index . 0 -}}
{{- $probe := deepCopy (index . 1 | default dict) -}}
{{- if and $probe $probe.httpGet (not (hasKey $probe.httpGet "port")) -}}
{{- $_ := set $probe.httpGet "port" $root.Values.healthPort -}}
{{- end -}}
{{- if $probe -}}
{{- toYaml $probe -}}
{{- end -}}
{{- end }}

{{/*
Values that would be unsafe together: rendering fails with the reason.
*/}}
{{- define "extractedprism.validate" -}}
{{- $loopback := or (hasPrefix "127." .Values.bindAddress) (eq .Values.bindAddress "::1") -}}
{{- if and .Values.hostNetwork (not $loopback) (not .Values.exposeOnNodeNetwork) -}}
{{- fail (printf "bindAddress %s with hostNetwork exposes the proxy, an unauthenticated path to the API servers, on the node's network. Bind to loopback, or set exposeOnNodeNetwork=true (and firewall it)." .Values.bindAddress) -}}
{{- end -}}
{{- if and .Values.enableDiscovery (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) -}}
{{- fail "serviceAccount.name is required with serviceAccount.create=false and enableDiscovery=true: the discovery Role would otherwise be bound to the namespace's default ServiceAccount, which every pod there may use." -}}
{{- end -}}
{{- end }}

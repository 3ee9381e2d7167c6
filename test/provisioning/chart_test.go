//go:build provisioning

package provisioning

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const chartDir = "packaging/helm/extractedprism"

// valuesRow is one row of a helm-docs values table.
type valuesRow struct {
	Key, Type, Default, Description string
}

// valuesTable reads the table that follows the "| Key | Type | Default |
// Description |" header.
func valuesTable(t *testing.T, text string) []valuesRow {
	t.Helper()

	var (
		rows []valuesRow
		in   bool
	)

	for line := range strings.SplitSeq(text, "\n") {
		switch {
		case strings.HasPrefix(line, "| Key | Type | Default | Description |"):
			in = true
		case in && strings.HasPrefix(line, "|---"):
		case in && strings.HasPrefix(line, "| "):
			cells := strings.Split(strings.Trim(line, "|"), " | ")
			if len(cells) != 4 {
				t.Fatalf("values table row with %d cells: %q", len(cells), line)
			}

			for i := range cells {
				cells[i] = strings.TrimSpace(cells[i])
			}

			rows = append(rows, valuesRow{cells[0], cells[1], strings.Trim(cells[2], "`"), cells[3]})
		case in:
			return rows
		}
	}

	return rows
}

// helmDocsType is the type helm-docs prints for a decoded value.
func helmDocsType(v any) string {
	switch x := v.(type) {
	case string, nil:
		return "string"
	case bool:
		return "bool"
	case float64:
		if x == math.Trunc(x) {
			return "int"
		}

		return "float"
	case map[string]any:
		return "object"
	case []any:
		return "list"
	}

	return "?"
}

// leaves lists the dotted paths of values' leaves; an empty map or list is a
// leaf.
func leaves(prefix string, v any) []string {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		return []string{prefix}
	}

	var out []string

	for k, sub := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}

		out = append(out, leaves(p, sub)...)
	}

	return out
}

// descriptions reads helm-docs "# -- text" comments from values.yaml and
// returns them by the dotted path of the key that follows.
func descriptions(text string) map[string]string {
	type level struct {
		indent int
		key    string
	}

	var (
		stack   []level
		pending string
	)

	out := map[string]string{}
	keyLine := regexp.MustCompile(`^( *)([A-Za-z0-9_]+):`)

	for line := range strings.SplitSeq(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if d, ok := strings.CutPrefix(trimmed, "# -- "); ok {
			pending = d

			continue
		}

		m := keyLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}

		indent := len(m[1])
		for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}

		stack = append(stack, level{indent, m[2]})

		if pending != "" {
			var keys []string
			for _, l := range stack {
				keys = append(keys, l.key)
			}

			out[strings.Join(keys, ".")] = pending
			pending = ""
		}
	}

	return out
}

func chartValues(t *testing.T) (map[string]any, string) {
	t.Helper()

	text := repoFile(t, chartDir+"/values.yaml")

	var values map[string]any
	if err := yaml.UnmarshalStrict([]byte(text), &values); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}

	return values, text
}

// checkTable checks a helm-docs values table against values.yaml: every row
// names a value with that type and default, every value is covered by
// exactly one row, and rows are sorted as helm-docs sorts them.
func checkTable(t *testing.T, rows []valuesRow, values map[string]any, docs map[string]string, withDescriptions bool) {
	t.Helper()

	if len(rows) == 0 {
		t.Fatal("no values table")
	}

	var keys []string

	for _, r := range rows {
		keys = append(keys, r.Key)

		v, ok := get(values, anyPath(r.Key)...)
		if !ok {
			t.Errorf("%s: in the table, not in values.yaml", r.Key)

			continue
		}

		if got := helmDocsType(v); got != r.Type {
			t.Errorf("%s: type %s in values.yaml, %s in the table", r.Key, got, r.Type)
		}

		def, _ := json.Marshal(v)
		if string(def) != r.Default {
			t.Errorf("%s: default %s in values.yaml, %s in the table", r.Key, def, r.Default)
		}

		if withDescriptions && docs[r.Key] != r.Description {
			t.Errorf("%s: description %q in values.yaml (# -- comment), %q in the table", r.Key, docs[r.Key], r.Description)
		}
	}

	if !slices.IsSorted(keys) {
		t.Errorf("the table is not sorted by key: %v", keys)
	}

	for _, leaf := range leaves("", values) {
		covering := 0

		for _, k := range keys {
			if leaf == k || strings.HasPrefix(leaf, k+".") {
				covering++
			}
		}

		if covering != 1 {
			t.Errorf("%s: in values.yaml, covered by %d table rows (want 1)", leaf, covering)
		}
	}
}

func anyPath(dotted string) []any {
	var p []any
	for k := range strings.SplitSeq(dotted, ".") {
		p = append(p, k)
	}

	return p
}

// The chart README's values table is values.yaml, as helm-docs would print it.
func TestChartReadmeValuesTable(t *testing.T) {
	values, text := chartValues(t)
	checkTable(t, valuesTable(t, repoFile(t, chartDir+"/README.md")), values, descriptions(text), true)
}

// changedFromSeed are the seed chart's values whose defaults were changed
// on purpose (issue 15), and why. Each must really differ from the seed.
var changedFromSeed = map[string]string{ //nolint:gochecknoglobals // a table
	"healthInterval":                "the daemon's default (5m), not 20s: checks are a backstop; the traffic, discovery and 1 s retries notice failures first",
	"healthTimeout":                 "the daemon's default (3s), not 15s",
	"livenessProbe":                 "none: the daemon's own watchdog ends a stalled process; a probe on the health port could be answered by any process on the node",
	"readinessProbe":                "no port: it follows healthPort",
	"resources":                     "no CPU limit on the path of all of a node's API traffic; requests for what it uses",
	"securityContext":               "a dedicated UID/GID 60745, not the host's nobody (65534), which could read what is given to the pod",
	"serviceAccount.name":           "the description: required with create=false and discovery",
	"bindAddress":                   "the description: not loopback needs exposeOnNodeNetwork",
	"healthPort":                    "the description: the readiness probe follows it",
	"updateStrategy.maxUnavailable": "0 with maxSurge 1 (issue 17): the new pod serves next to the old one, so a node is never without its proxy",
}

// addedSinceSeed are values the seed chart did not have.
var addedSinceSeed = []string{"exposeOnNodeNetwork", "linkLocal.address", "linkLocal.enabled", "maxConnections", "minReadySeconds", "updateStrategy.maxSurge"} //nolint:gochecknoglobals // a table

// values.yaml keeps the seed chart's keys, types and defaults, except those
// changed on purpose (changedFromSeed) and those added (addedSinceSeed).
func TestChartValuesMatchSeed(t *testing.T) {
	values, text := chartValues(t)
	docs := descriptions(text)

	data, err := os.ReadFile(filepath.Join("testdata", "seed-values-table.md"))
	if err != nil {
		t.Fatal(err)
	}

	var kept []valuesRow

	for _, r := range valuesTable(t, string(data)) {
		if _, changed := changedFromSeed[r.Key]; !changed {
			kept = append(kept, r)

			continue
		}

		v, ok := get(values, anyPath(r.Key)...)
		def, _ := json.Marshal(v)

		if ok && string(def) == r.Default && docs[r.Key] == r.Description {
			t.Errorf("%s: listed as changed from the seed chart, but it is the same", r.Key)
		}

		if ok && helmDocsType(v) != r.Type {
			t.Errorf("%s: type %s, the seed chart's was %s: users' values files would break", r.Key, helmDocsType(v), r.Type)
		}

		kept = append(kept, valuesRow{Key: r.Key, Type: r.Type, Default: string(def), Description: r.Description})
	}

	for _, k := range addedSinceSeed {
		v, ok := get(values, anyPath(k)...)
		if !ok {
			t.Errorf("%s: listed as added, not in values.yaml", k)

			continue
		}

		def, _ := json.Marshal(v)
		kept = append(kept, valuesRow{Key: k, Type: helmDocsType(v), Default: string(def)})
	}

	slices.SortFunc(kept, func(a, b valuesRow) int { return strings.Compare(a.Key, b.Key) })
	checkTable(t, kept, values, nil, false)
}

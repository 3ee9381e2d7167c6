package discovery

import (
	"errors"
	"slices"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

func slice(family discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{AddressType: family, Ports: ports, Endpoints: eps}
}

func https(port int32) []discoveryv1.EndpointPort {
	return []discoveryv1.EndpointPort{{Name: ptr.To("https"), Port: ptr.To(port)}}
}

func ep(ready, terminating *bool, addrs ...string) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: addrs, Conditions: discoveryv1.EndpointConditions{Ready: ready, Terminating: terminating}}
}

func TestFromSlice(t *testing.T) {
	t.Parallel()

	yes, no := ptr.To(true), ptr.To(false)

	for _, tc := range []struct {
		name  string
		slice *discoveryv1.EndpointSlice
		want  []string
		bad   bool
	}{
		{
			name:  "what the API server publishes",
			slice: slice(discoveryv1.AddressTypeIPv4, https(6443), ep(yes, nil, "10.0.0.1"), ep(yes, nil, "10.0.0.2")),
			want:  []string{"10.0.0.1:6443", "10.0.0.2:6443"},
		},
		{
			name:  "the slice's port, not a static one",
			slice: slice(discoveryv1.AddressTypeIPv4, append([]discoveryv1.EndpointPort{{Name: ptr.To("metrics"), Port: ptr.To(int32(9))}}, https(443)...), ep(nil, nil, "10.0.0.1")),
			want:  []string{"10.0.0.1:443"},
		},
		{
			name:  "not ready and terminating are skipped, absent conditions mean ready",
			slice: slice(discoveryv1.AddressTypeIPv4, https(6443), ep(no, nil, "10.0.0.1"), ep(yes, yes, "10.0.0.2"), ep(nil, no, "10.0.0.3"), ep(nil, nil, "10.0.0.4")),
			want:  []string{"10.0.0.3:6443", "10.0.0.4:6443"},
		},
		{
			name:  "IPv6, bracketed and canonical",
			slice: slice(discoveryv1.AddressTypeIPv6, https(6443), ep(yes, nil, "fd00:0::1", "fd00::2")),
			want:  []string{"[fd00::1]:6443", "[fd00::2]:6443"},
		},
		{
			name:  "duplicates collapse",
			slice: slice(discoveryv1.AddressTypeIPv4, https(6443), ep(yes, nil, "10.0.0.1"), ep(yes, nil, "10.0.0.1")),
			want:  []string{"10.0.0.1:6443"},
		},
		{name: "no https port", slice: slice(discoveryv1.AddressTypeIPv4, nil, ep(yes, nil, "10.0.0.1")), bad: true},
		{name: "port out of range", slice: slice(discoveryv1.AddressTypeIPv4, https(0), ep(yes, nil, "10.0.0.1")), bad: true},
		{name: "FQDN slices are not for us", slice: slice(discoveryv1.AddressTypeFQDN, https(6443), ep(yes, nil, "api.example")), bad: true},
		{name: "IPv6 address in an IPv4 slice", slice: slice(discoveryv1.AddressTypeIPv4, https(6443), ep(yes, nil, "fd00::1")), bad: true},
		{name: "garbage address", slice: slice(discoveryv1.AddressTypeIPv4, https(6443), ep(yes, nil, "10.0.0.300")), bad: true},
		{name: "nil", slice: nil, bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			got, err := FromSlice(tc.slice)
			if tc.bad {
				if !errors.Is(err, ErrBadSlice) {
					t.Fatalf("FromSlice = %v, %v; want ErrBadSlice", got, err)
				}

				return
			}

			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("FromSlice = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

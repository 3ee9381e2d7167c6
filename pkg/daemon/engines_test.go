package daemon

import (
	"reflect"
	"testing"

	"github.com/lexfrei/extractedprism/pkg/balancer"
)

// Every field of balancer.Stats is a counter or a histogram, and each is
// summed: a new field of another kind fails here, not silently in /metrics.
func TestAddStatsCoversEveryField(t *testing.T) {
	t.Parallel()

	one := balancer.Stats{DialDuration: balancer.Histogram{Counts: []uint64{1, 2}, Sum: 0.5}}
	v := reflect.ValueOf(&one).Elem()

	for i := range v.NumField() {
		switch f := v.Field(i); {
		case f.Kind() == reflect.Uint64:
			f.SetUint(uint64(i + 1))
		case f.Type() == reflect.TypeFor[balancer.Histogram]():
		default:
			t.Fatalf("balancer.Stats.%s is a %s: teach addStats to add it", v.Type().Field(i).Name, f.Type())
		}
	}

	var total balancer.Stats

	addStats(&total, one)
	addStats(&total, one)

	tv := reflect.ValueOf(total)
	for i := range tv.NumField() {
		if f := tv.Field(i); f.Kind() == reflect.Uint64 && f.Uint() != 2*uint64(i+1) {
			t.Errorf("%s: %d, want %d", tv.Type().Field(i).Name, f.Uint(), 2*(i+1))
		}
	}

	if total.DialDuration.Sum != 1 || !reflect.DeepEqual(total.DialDuration.Counts, []uint64{2, 4}) {
		t.Errorf("histogram: %+v", total.DialDuration)
	}
}

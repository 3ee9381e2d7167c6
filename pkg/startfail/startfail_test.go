package startfail

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestBackoffGrowsAndResets(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()

	// Each start is a new process: a new Counter on the same directory.
	var got []time.Duration

	for range 9 {
		n, d := Open(dir).Failed()
		got = append(got, d)

		if n != len(got) {
			t.Fatalf("failure %d counted as %d", len(got), n)
		}
	}

	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("delays %v, want %v seconds", got, want)
		}
	}

	Open(dir).Started()

	if _, err := os.Stat(filepath.Join(dir, File)); !os.IsNotExist(err) {
		t.Fatalf("the counter survived a successful start: %v", err)
	}

	if n, d := Open(dir).Failed(); n != 1 || d != time.Second {
		t.Fatalf("after a successful start: failure %d, delay %s; want 1, 1s", n, d)
	}
}

// Without a state directory nothing is remembered and nothing waits; a
// counter file that is not a number counts as none.
func TestNoStateAndGarbage(t *testing.T) {
	t.Parallel()

	if n, d := Open("").Failed(); n != 0 || d != 0 {
		t.Fatalf("no state directory: failure %d, delay %s; want 0, 0", n, d)
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, File), []byte("\x00garbage"), 0o600); err != nil {
		t.Fatal(err)
	}

	if n, _ := Open(dir).Failed(); n != 1 {
		t.Fatalf("over a garbage counter: failure %d, want 1", n)
	}

	// A huge count does not overflow the delay.
	if err := os.WriteFile(filepath.Join(dir, File), []byte("9223372036854775806"), 0o600); err != nil {
		t.Fatal(err)
	}

	if _, d := Open(dir).Failed(); d != Max {
		t.Fatalf("after very many failures: delay %s, want %s", d, Max)
	}
}

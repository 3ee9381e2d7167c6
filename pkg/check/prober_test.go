package check

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/lexfrei/extractedprism/pkg/upstream"
)

// held is a check that waits until released (nil: passes) or cancelled.
type held struct {
	started chan struct{}
	release chan error
}

func newHeld() *held { return &held{started: make(chan struct{}, 8), release: make(chan error, 8)} }

func (h *held) Check(ctx context.Context, _ string) error {
	h.started <- struct{}{}

	select {
	case err := <-h.release:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func newSet(t *testing.T, fall int) *upstream.Set {
	t.Helper()

	set, err := upstream.New(upstream.Options{
		Logger: zaptest.NewLogger(t),
		Rules:  upstream.Rules{Fall: fall, Rise: 1, ResetOnFailure: true, Interval: time.Hour},
	}, []upstream.Endpoint{{Address: "127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}

	return set
}

// A check cut short by Stop says nothing of the upstream (it used to count
// as a failure: with fall 1 a healthy upstream went down on shutdown).
func TestStopDuringACheckRecordsNothing(t *testing.T) {
	t.Parallel()

	set := newSet(t, 1)
	h := newHeld()
	p := New(set, Settings{Timeout: time.Hour, Check: h}, zaptest.NewLogger(t), nil)
	p.Start()
	<-h.started

	p.Stop()

	if st := set.Status()[0]; !st.Healthy || st.Score != 0 || st.LastError != "" {
		t.Fatalf("a check cancelled by Stop was recorded: %+v", st)
	}
}

// A reload during a check must not disturb a healthy upstream: the check
// in flight finishes and counts as it comes out.
func TestApplyDuringACheckDisturbsNothing(t *testing.T) {
	t.Parallel()

	set := newSet(t, 1)
	h := newHeld()
	p := New(set, Settings{Timeout: time.Hour, Check: h}, zaptest.NewLogger(t), nil)
	p.Start()
	t.Cleanup(p.Stop)
	<-h.started

	p.Apply(Settings{Timeout: time.Minute, Check: h})
	h.release <- nil

	if err := p.WaitFirstRound(t.Context()); err != nil {
		t.Fatal(err)
	}

	if st := set.Status()[0]; !st.Healthy || st.Score != 1 {
		t.Fatalf("after a reload during a passing check: %+v", st)
	}
}

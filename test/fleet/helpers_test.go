package fleet

import (
	"errors"
	"sync"
	"testing"
)

// named lists the names of items, in order.
func named[T any](items []T, name func(T) string) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, name(it))
	}

	return out
}

// pick returns the items called names, in that order (repeats allowed); an
// unknown name fails the benchmark, naming setting and the choices.
func pick[T any](tb testing.TB, setting string, items []T, name func(T) string, names []string) []T {
	tb.Helper()

	var out []T

	for _, n := range names {
		found := false

		for _, it := range items {
			if name(it) == n {
				out, found = append(out, it), true
			}
		}

		if !found {
			tb.Fatalf("%s: no %q (have %v)", setting, n, named(items, name))
		}
	}

	return out
}

// inParallel calls do(i) for i in [0, n) on workers goroutines and joins the
// errors.
func inParallel(n, workers int, do func(i int) error) error {
	errs := make([]error, n)
	next := make(chan int)

	var wg sync.WaitGroup

	for range workers {
		wg.Go(func() {
			for i := range next {
				errs[i] = do(i)
			}
		})
	}

	for i := range n {
		next <- i
	}

	close(next)
	wg.Wait()

	return errors.Join(errs...)
}

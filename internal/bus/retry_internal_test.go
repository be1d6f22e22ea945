package bus

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestRetryTransientTriesAgain: a try whose request gets no answer (as
// one sent before a cluster elects its meta leader) ends at transientTry,
// not at the caller's deadline, and the next try succeeds.
func TestRetryTransientTriesAgain(t *testing.T) {
	defer func(d time.Duration) { transientTry = d }(transientTry)
	transientTry = 50 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tries := 0
	err := RetryTransient(ctx, func(ctx context.Context) error {
		tries++
		if tries == 1 {
			<-ctx.Done() // no answer
			return ctx.Err()
		}
		return nil
	})
	if err != nil || tries != 2 {
		t.Fatalf("got %v after %d tries, want success on the second (the first waited on to the caller's deadline?)", err, tries)
	}
	// A refusal is not tried again.
	tries = 0
	refused := errors.New("stream name already in use")
	if err := RetryTransient(ctx, func(context.Context) error { tries++; return refused }); !errors.Is(err, refused) || tries != 1 {
		t.Fatalf("a refusal: %v after %d tries, want it at once", err, tries)
	}
}

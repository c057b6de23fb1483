package reuse

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestBudgetBurstThenRate: a burst goes at once, then logins are spaced at the rate; a login
// whose turn would come after its deadline is refused at once and spends nothing.
func TestBudgetBurstThenRate(t *testing.T) {
	b := NewBudget(BudgetConfig{Rate: 10, Burst: 3}, nil)
	now := time.Unix(1000, 0)
	b.now = func() time.Time { return now }
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		if err := b.Wait(ctx); err != nil {
			t.Fatalf("login %d of the burst: %v", i, err)
		}
		cancel()
	}
	// The fourth would wait 100 ms: refused within 50 ms, nothing spent.
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(50*time.Millisecond))
	defer cancel()
	var over *ErrOverBudget
	if err := b.Wait(ctx); !errors.As(err, &over) || over.Wait != 100*time.Millisecond {
		t.Fatalf("fourth login: %v, want over budget by 100ms", err)
	}
	now = now.Add(100 * time.Millisecond)
	ctx2, cancel2 := context.WithDeadline(context.Background(), now.Add(time.Millisecond))
	defer cancel2()
	if err := b.Wait(ctx2); err != nil {
		t.Fatalf("after 100 ms one more login may go: %v", err)
	}
	if err := b.Wait(ctx2); !errors.As(err, &over) {
		t.Fatalf("and only one: %v", err)
	}
}

// TestBudgetWaitsForItsTurn: a login over budget with time left waits, for about its turn.
func TestBudgetWaitsForItsTurn(t *testing.T) {
	b := NewBudget(BudgetConfig{Rate: 20, Burst: 1}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := b.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Errorf("the second login at 20/s went after %v, want about 50ms", d)
	}
}

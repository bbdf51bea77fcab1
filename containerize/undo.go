package containerize

import (
	"errors"
	"fmt"
	"sync"
)

// Undo is a stack of steps that reverse changes to the host. Each creator in
// this package pushes its undo the moment the thing it made exists; Run pops
// and runs them in reverse order. The zero value is ready to use and safe
// for concurrent use.
type Undo struct {
	mu    sync.Mutex
	steps []undoStep
}

type undoStep struct {
	what string
	fn   func() error
}

// Push registers fn, described by what (for example "runc delete -f ID"),
// to run when Run is called.
func (u *Undo) Push(what string, fn func() error) {
	u.mu.Lock()
	u.steps = append(u.steps, undoStep{what, fn})
	u.mu.Unlock()
}

// Len is the number of steps waiting to run.
func (u *Undo) Len() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.steps)
}

// Run runs every registered step, last first, even when some fail, and
// returns their errors joined. Steps run once: Run empties the stack.
func (u *Undo) Run() error {
	u.mu.Lock()
	steps := u.steps
	u.steps = nil
	u.mu.Unlock()
	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		if err := steps[i].fn(); err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", steps[i].what, err))
		}
	}
	return errors.Join(errs...)
}

// Package undo is lowlat's one idiom for acquire-and-undo: every resource a
// setup step acquires (a socket, a mapping, an XDP attachment, a filter)
// registers its release the moment it succeeds, and a failure later in the
// setup, or the final Close, runs the releases in reverse order.
//
//	var u undo.Stack
//	defer u.RunIfFailed(&err)
//	fd, err := open(); if err != nil { return err }
//	u.Add(func() error { return close(fd) })
//	...
//	obj.undo = u.Take() // success: the object's Close runs them
package undo

import "errors"

// Stack is a list of releases run last-in, first-out. The zero value is
// empty and ready to use. A Stack is not safe for concurrent use.
type Stack struct {
	fns []func() error
}

// Add registers f to run before everything registered earlier.
func (s *Stack) Add(f func() error) { s.fns = append(s.fns, f) }

// AddFunc registers a release that cannot fail.
func (s *Stack) AddFunc(f func()) { s.Add(func() error { f(); return nil }) }

// Run runs every release in reverse order of registration, empties the
// stack, and returns the errors joined. Every release runs, whatever the
// ones before it returned.
func (s *Stack) Run() error {
	var errs []error
	for i := len(s.fns) - 1; i >= 0; i-- {
		if err := s.fns[i](); err != nil {
			errs = append(errs, err)
		}
		s.fns[i] = nil
	}
	s.fns = s.fns[:0]
	return errors.Join(errs...)
}

// RunIfFailed runs the stack when *err is not nil: defer it right after
// the stack is declared, so that a failed setup releases what it took.
func (s *Stack) RunIfFailed(err *error) {
	if *err != nil {
		s.Run()
	}
}

// Take moves the releases into a new Stack and leaves s empty, so that a
// deferred RunIfFailed on s does nothing once setup has succeeded.
func (s *Stack) Take() Stack {
	t := Stack{fns: s.fns}
	s.fns = nil
	return t
}

// Len is the number of releases registered.
func (s *Stack) Len() int { return len(s.fns) }

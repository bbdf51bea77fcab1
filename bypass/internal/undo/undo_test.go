package undo

import (
	"errors"
	"slices"
	"testing"
)

func TestRunReverseAndJoin(t *testing.T) {
	var s Stack
	var order []int
	e1, e3 := errors.New("one"), errors.New("three")
	s.Add(func() error { order = append(order, 1); return e1 })
	s.AddFunc(func() { order = append(order, 2) })
	s.Add(func() error { order = append(order, 3); return e3 })
	err := s.Run()
	if !slices.Equal(order, []int{3, 2, 1}) {
		t.Fatalf("order %v, want 3 2 1", order)
	}
	if !errors.Is(err, e1) || !errors.Is(err, e3) {
		t.Fatalf("Run = %v, want both errors", err)
	}
	if s.Len() != 0 || s.Run() != nil {
		t.Fatal("a second Run must find nothing")
	}
}

func TestRunIfFailedAndTake(t *testing.T) {
	ran := 0
	setup := func(fail bool) (taken Stack, err error) {
		var s Stack
		defer s.RunIfFailed(&err)
		s.AddFunc(func() { ran++ })
		if fail {
			return Stack{}, errors.New("later step")
		}
		return s.Take(), nil
	}
	if _, err := setup(true); err == nil || ran != 1 {
		t.Fatalf("failed setup: err %v, ran %d; want an error and the release run", err, ran)
	}
	ran = 0
	taken, err := setup(false)
	if err != nil || ran != 0 || taken.Len() != 1 {
		t.Fatalf("good setup: err %v, ran %d, taken %d; want nothing run and one release taken", err, ran, taken.Len())
	}
	taken.Run()
	if ran != 1 {
		t.Fatal("the taken release did not run")
	}
}

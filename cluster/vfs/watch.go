package vfs

import (
	"context"
	"sync"
)

// watcher is one Watch: the store pushes into a bounded queue without
// blocking, and a goroutine per watcher hands events to the channel at the
// reader's pace.
type watcher struct {
	prefix string
	limit  int
	wake   chan struct{} // capacity 1: "the queue changed"

	mu     sync.Mutex
	queue  []Event
	head   int
	resync bool
}

// Watch returns every change (tombstones included) under prefix, in
// version order per key, from the moment of the call; List after Watch to
// learn the state without missing a change. A watcher that falls more than
// Options.WatchBuffer events behind loses the queued events and gets one
// Event{Resync: true} instead, so it never blocks the store. The channel
// is closed when ctx ends or the store closes; an invalid prefix gives a
// closed channel (check it with ValidatePrefix).
func (s *Store) Watch(ctx context.Context, prefix string) <-chan Event {
	out := make(chan Event)
	if err := ValidatePrefix(prefix); err != nil {
		s.log.Error("vfs: watch refused", "prefix", prefix, "err", err)
		close(out)
		return out
	}
	w := &watcher{prefix: prefix, limit: s.watchBuf, wake: make(chan struct{}, 1)}
	s.mu.RLock()
	closed := s.closed
	if !closed {
		s.wg.Add(1) // before Close can start waiting
	}
	s.mu.RUnlock()
	if closed {
		close(out)
		return out
	}
	s.notifyMu.Lock()
	s.watchers[w] = struct{}{}
	s.notifyMu.Unlock()
	go s.serve(ctx, w, out)
	return out
}

func (s *Store) serve(ctx context.Context, w *watcher, out chan<- Event) {
	defer s.wg.Done()
	defer close(out)
	defer func() {
		s.notifyMu.Lock()
		delete(s.watchers, w)
		s.notifyMu.Unlock()
	}()
	for {
		ev, ok := w.pop()
		if !ok {
			select {
			case <-w.wake:
				continue
			case <-ctx.Done():
				return
			case <-s.done:
				return
			}
		}
		select {
		case out <- ev:
		case <-ctx.Done():
			return
		case <-s.done:
			return
		}
	}
}

// push queues e, or drops the queue and marks a resync when the watcher is
// too far behind. Called with the store's notifyMu held; never blocks.
func (w *watcher) push(e Entry) {
	w.mu.Lock()
	if w.resync {
		// Already dropping: the reader will List again anyway.
	} else if len(w.queue)-w.head >= w.limit {
		w.queue, w.head, w.resync = w.queue[:0], 0, true
	} else {
		if w.head > 0 && len(w.queue) == cap(w.queue) {
			// Reuse the consumed front rather than growing the slice.
			n := copy(w.queue, w.queue[w.head:])
			clear(w.queue[n:])
			w.queue, w.head = w.queue[:n], 0
		}
		w.queue = append(w.queue, Event{Entry: e})
	}
	w.mu.Unlock()
	w.signal()
}

func (w *watcher) pushResync() {
	w.mu.Lock()
	w.queue, w.head, w.resync = w.queue[:0], 0, true
	w.mu.Unlock()
	w.signal()
}

func (w *watcher) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// pop takes the next event: a pending resync first, then the queue.
func (w *watcher) pop() (Event, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.resync {
		w.resync = false
		return Event{Resync: true}, true
	}
	if w.head == len(w.queue) {
		w.queue, w.head = w.queue[:0], 0
		return Event{}, false
	}
	ev := w.queue[w.head]
	w.queue[w.head] = Event{}
	w.head++
	return ev, true
}

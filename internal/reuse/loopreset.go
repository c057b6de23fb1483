package reuse

import (
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/proxy"
)

// LoopEngine is an Engine whose reset the relay loop can run (PostgreSQL's DISCARD ALL is one
// request and its answer): the session then goes back to the pool with no goroutine and
// without leaving the relay's socket handling (proxy.Resetter), which is most of what a
// reused connection costs the sidecar. An engine without it is reset by Reset.
type LoopEngine interface {
	Engine
	// LoopReset returns the request that resets a session in state whose app session t
	// tracked, and the parser its answer is fed to, chunk by chunk as it arrives: done once the
	// answer is whole, with the session's state after it; an error (a refusal, anything
	// unexpected, bytes past the answer) fails the reset. A nil request leaves it to Reset.
	LoopReset(state any, t proxy.Tracker) (req []byte, reply func(p []byte) (done bool, state any, err error))
}

// loopReset is a held session's proxy.Resetter: one per held session, used by the relay loop
// of each app session it serves, one at a time.
type loopReset struct {
	p   *Pool
	h   *held
	eng LoopEngine
	// Set by ResetRequest and ResetReply on the relay loop, read by the releaser the loop
	// calls after them.
	started bool
	reply   func([]byte) (bool, any, error)
	state   any
	err     error
}

// resetter returns h's proxy.Resetter, or nil when the engine resets on a goroutine.
func (p *Pool) resetter(h *held) proxy.Resetter {
	eng, ok := p.eng.(LoopEngine)
	if !ok {
		return nil
	}
	if h.lr == nil {
		h.lr = &loopReset{p: p, h: h, eng: eng}
	}
	return h.lr
}

// ResetRequest implements proxy.Resetter. A session past its lifetime is not reset (Release
// discards it).
func (lr *loopReset) ResetRequest(t proxy.Tracker) ([]byte, time.Duration) {
	p, h := lr.p, lr.h
	lr.started, lr.reply, lr.state, lr.err = false, nil, nil, nil
	if p.cfg.MaxLifetime > 0 && time.Since(h.born) >= p.cfg.MaxLifetime {
		return nil, 0
	}
	req, reply := lr.eng.LoopReset(h.state, t)
	if req == nil {
		return nil, 0
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, 0
	}
	// A checkout of the slot may wait for this session as for one reset on a goroutine.
	p.resetting[h.slot]++
	h.gen = p.evictions[h.path]
	p.mu.Unlock()
	lr.started, lr.reply = true, reply
	return req, p.cfg.ResetTimeout
}

// ResetReply implements proxy.Resetter.
func (lr *loopReset) ResetReply(b []byte) (done, ok bool) {
	if lr.reply == nil {
		return true, false
	}
	done, state, err := lr.reply(b)
	switch {
	case err != nil:
		lr.err, lr.reply = err, nil
		return true, false
	case done:
		lr.state, lr.reply = state, nil
		return true, true
	}
	return false, false
}

// released ends a reset the loop ran, from the releaser: conn is the parked session if it
// succeeded, nil if it failed (or was cut by a timeout, the upstream or shutdown).
func (lr *loopReset) released(conn net.Conn) {
	p, h := lr.p, lr.h
	lr.started = false
	if conn == nil {
		reason := ReasonResetFailed
		if lr.err == nil && p.ctx.Err() != nil {
			reason = ReasonShutdown
		}
		if lr.err != nil {
			p.cfg.Log.Debug("upstream session not reused", zap.String("path", h.path), zap.String("reason", reason), zap.Error(lr.err))
		}
		p.resetDone(h.slot)
		p.discarded(reason)
		return
	}
	h.state, lr.state = lr.state, nil
	p.put(h, true, true)
}

package dispytch

import (
	"context"
	"log/slog"
)

// Every log line about a message carries its id, type, topic, group and
// handler ("" for what is unknown: the id and type of a payload that did
// not decode, the handler of a message that reached none), in that order,
// and is logged with the handlers' context, so that a slog handler can add
// the trace the message belongs to.

// logAbout logs a line about one message.
func (l *Listener) logAbout(ctx context.Context, level slog.Level, msg string, id, typ, topic, handler string, args ...any) {
	if !l.log.Enabled(ctx, level) {
		return
	}
	all := make([]any, 0, 10+len(args))
	all = append(all, "id", id, "type", typ, "topic", topic, "group", l.group, "handler", handler)
	l.log.Log(ctx, level, msg, append(all, args...)...)
}

// logMsg logs a line about the message of ms.
func (r *runState) logMsg(ms *msgState, level slog.Level, handler, msg string, args ...any) {
	id, typ := "", ""
	if ms.decoded {
		id, typ = ms.env.ID, ms.env.Type
	}
	ctx := ms.ctx
	if ctx == nil {
		ctx = r.hard
	}
	r.l.logAbout(ctx, level, msg, id, typ, ms.d.Topic, handler, args...)
}

// logMeta logs a line about the message of a handler's attempt.
func (r *runState) logMeta(ctx context.Context, level slog.Level, h *handler, meta *Metadata, msg string, args ...any) {
	r.l.logAbout(ctx, level, msg, meta.ID, meta.Type, meta.Topic, h.info.Name, args...)
}

package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/ctxos/ctxos/cluster/vfs"
)

// maxPutBody bounds a value written through the API; the store refuses
// values over its own limit with a clearer message, so this only stops
// abuse.
const maxPutBody = 2 << 20

// EntryView is a VFS entry as the API shows it: the CBOR value as JSON.
type EntryView struct {
	Path    string          `json:"path"`
	Value   json.RawMessage `json:"value,omitempty"`
	Version vfs.Version     `json:"version"`
	Deleted bool            `json:"deleted,omitempty"`
}

// WatchEvent is one server-sent event of a watch: a changed entry, or a
// resync (the watcher fell behind; list the prefix again).
type WatchEvent struct {
	Resync bool      `json:"resync,omitempty"`
	Entry  EntryView `json:"entry"`
}

// MemberStatus is one member with the facts `ctxos status` shows, read from
// /hw/<node> and /sum/<node>.
type MemberStatus struct {
	Member
	// LastSeen is the time of the member's latest status report (/sum),
	// the freshest sign of life the VFS holds.
	LastSeen time.Time       `json:"lastSeen,omitempty"`
	HW       json.RawMessage `json:"hw,omitempty"`
	Sum      json.RawMessage `json:"sum,omitempty"`
}

// StatusView is what GET /v1/status returns. Sections are added by the
// agent's other parts through [API.AddStatus].
type StatusView struct {
	Node    string         `json:"node"`
	Members []MemberStatus `json:"members"`
	// Revision is the manifest of the desired state in force
	// (/sys/revision), absent before the first sync.
	Revision json.RawMessage `json:"revision,omitempty"`
	// Integrity holds every /itg entry: what nodes report as wrong (sync
	// errors, failed steps, unplaced instances).
	Integrity []EntryView `json:"integrity,omitempty"`
	// Progress holds every /run/<node>/progress entry.
	Progress []EntryView `json:"progress,omitempty"`
	// Sync holds every /run/<node>/gitsync entry: the state of each node
	// that follows the repository.
	Sync []EntryView `json:"sync,omitempty"`
	// Scale holds every /lk/scale/<ctx> entry: the scaler's decision for
	// each autoscaled CTX.
	Scale    []EntryView                `json:"scale,omitempty"`
	Sections map[string]json.RawMessage `json:"sections,omitempty"`
}

// API is the node HTTP API. Mount it on an http.Server; other parts of the
// agent add routes with [API.Handle] and status sections with
// [API.AddStatus].
type API struct {
	node     *Node
	mux      *http.ServeMux
	log      *slog.Logger
	sections map[string]func(ctx context.Context) (any, error)
}

// NewAPI builds the API of n.
func NewAPI(n *Node) *API {
	a := &API{node: n, mux: http.NewServeMux(), log: n.log, sections: map[string]func(context.Context) (any, error){}}
	a.mux.HandleFunc("GET /v1/kv/{path...}", a.getKV)
	a.mux.HandleFunc("PUT /v1/kv/{path...}", a.putKV)
	a.mux.HandleFunc("DELETE /v1/kv/{path...}", a.deleteKV)
	a.mux.HandleFunc("GET /v1/watch/{path...}", a.watch)
	a.mux.HandleFunc("GET /v1/members", a.members)
	a.mux.HandleFunc("GET /v1/status", a.status)
	a.mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "node": n.Name()})
	})
	return a
}

// Handle adds a route, with the pattern syntax of http.ServeMux.
func (a *API) Handle(pattern string, h http.Handler) { a.mux.Handle(pattern, h) }

// AddStatus adds a named section to GET /v1/status, computed per request.
// Must be called before the API serves requests.
func (a *API) AddStatus(name string, f func(ctx context.Context) (any, error)) {
	a.sections[name] = f
}

func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, apiError{Error: fmt.Sprintf(format, args...)})
}

func pathOf(r *http.Request) string { return "/" + strings.TrimSuffix(r.PathValue("path"), "/") }

// ContentTypeCBOR, asked for in a read's Accept header, makes the API answer
// with the entries themselves (vfs.Entry, or a list of them) in CBOR: the
// value bytes exactly as stored, which JSON cannot carry (it does not tell
// 2.0 from 2), for a client that must rebuild a snapshot bit for bit.
const ContentTypeCBOR = "application/cbor"

func (a *API) getKV(w http.ResponseWriter, r *http.Request) {
	p := pathOf(r)
	raw := r.Header.Get("Accept") == ContentTypeCBOR
	if _, recurse := r.URL.Query()["recurse"]; recurse || p == "/" {
		if err := vfs.ValidatePrefix(p); err != nil {
			writeError(w, http.StatusBadRequest, "%v", err)
			return
		}
		entries := a.node.store.List(p)
		if raw {
			writeCBOR(w, entries)
			return
		}
		out := make([]EntryView, 0, len(entries))
		for _, e := range entries {
			out = append(out, viewOf(e))
		}
		writeJSON(w, http.StatusOK, out)
		return
	}
	if err := vfs.ValidatePath(p); err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	e, ok := a.node.store.Get(p)
	if !ok {
		writeError(w, http.StatusNotFound, "%s: no such entry", p)
		return
	}
	if raw {
		writeCBOR(w, e)
		return
	}
	writeJSON(w, http.StatusOK, viewOf(e))
}

func writeCBOR(w http.ResponseWriter, v any) {
	b, err := vfs.Encode(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encode: %v", err)
		return
	}
	w.Header().Set("Content-Type", ContentTypeCBOR)
	_, _ = w.Write(b)
}

// refuseDesired answers 403 for writes to desired roots: only gitsync, in
// the agent, writes those.
func refuseDesired(w http.ResponseWriter, p string) bool {
	segs, err := vfs.Split(p)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return true
	}
	if vfs.IsDesired(segs[0]) {
		writeError(w, http.StatusForbidden, "%s: desired state comes from git", p)
		return true
	}
	return false
}

func (a *API) putKV(w http.ResponseWriter, r *http.Request) {
	p := pathOf(r)
	if refuseDesired(w, p) {
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPutBody+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "read body: %v", err)
		return
	}
	if len(body) > maxPutBody {
		writeError(w, http.StatusRequestEntityTooLarge, "%s: value larger than %d bytes", p, maxPutBody)
		return
	}
	v, err := decodeJSONValue(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%s: body is not JSON: %v", p, err)
		return
	}
	e, err := a.node.store.PutValue(p, v)
	if err != nil {
		writeError(w, storeErrorCode(err), "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, viewOf(e))
}

func (a *API) deleteKV(w http.ResponseWriter, r *http.Request) {
	p := pathOf(r)
	if refuseDesired(w, p) {
		return
	}
	e, err := a.node.store.Delete(p)
	if err != nil {
		writeError(w, storeErrorCode(err), "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, viewOf(e))
}

func storeErrorCode(err error) int {
	switch {
	case errors.Is(err, vfs.ErrNotWriter):
		return http.StatusForbidden
	case errors.Is(err, vfs.ErrInvalidPath):
		return http.StatusBadRequest
	case errors.Is(err, vfs.ErrValueTooLarge):
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusInternalServerError
}

func (a *API) watch(w http.ResponseWriter, r *http.Request) {
	p := pathOf(r)
	if err := vfs.ValidatePrefix(p); err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	events := a.node.store.Watch(r.Context(), p)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	for ev := range events {
		out := WatchEvent{Resync: ev.Resync}
		name := "resync"
		if !ev.Resync {
			out.Entry = viewOf(ev.Entry)
			name = "put"
			if ev.Entry.Deleted {
				name = "delete"
			}
		}
		b, err := json.Marshal(out)
		if err != nil {
			return
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, b); err != nil {
			return
		}
		flusher.Flush()
	}
}

func (a *API) members(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.node.Members())
}

func (a *API) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.Status(r.Context()))
}

// Status assembles the status view from the member list and the VFS.
func (a *API) Status(ctx context.Context) StatusView {
	st := StatusView{Node: a.node.Name()}
	for _, m := range a.node.Members() {
		ms := MemberStatus{Member: m}
		if e, ok := a.node.store.Get("/hw/" + m.Name); ok {
			ms.HW = cborToJSON(e.Value)
		}
		if e, ok := a.node.store.Get("/sum/" + m.Name); ok {
			ms.Sum = cborToJSON(e.Value)
			ms.LastSeen = time.Unix(0, e.Version.Wall).UTC()
		}
		st.Members = append(st.Members, ms)
		if e, ok := a.node.store.Get("/run/" + m.Name + "/progress"); ok {
			st.Progress = append(st.Progress, viewOf(e))
		}
		if e, ok := a.node.store.Get("/run/" + m.Name + "/gitsync"); ok {
			st.Sync = append(st.Sync, viewOf(e))
		}
	}
	if e, ok := a.node.store.Get("/sys/revision"); ok {
		st.Revision = cborToJSON(e.Value)
	}
	for _, e := range a.node.store.List("/itg") {
		st.Integrity = append(st.Integrity, viewOf(e))
	}
	for _, e := range a.node.store.List("/lk/scale") {
		st.Scale = append(st.Scale, viewOf(e))
	}
	for name, f := range a.sections {
		v, err := f(ctx)
		if err != nil {
			v = apiError{Error: err.Error()}
		}
		b, err := json.Marshal(v)
		if err != nil {
			continue
		}
		if st.Sections == nil {
			st.Sections = map[string]json.RawMessage{}
		}
		st.Sections[name] = b
	}
	return st
}

func viewOf(e vfs.Entry) EntryView {
	v := EntryView{Path: e.Path, Version: e.Version, Deleted: e.Deleted}
	if !e.Deleted {
		v.Value = cborToJSON(e.Value)
	}
	return v
}

var jsonMapType = reflect.TypeOf(map[string]any(nil))

var jsonDecMode = func() cbor.DecMode {
	dm, err := cbor.DecOptions{DefaultMapType: jsonMapType}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// cborToJSON renders a CBOR value as JSON; a value JSON cannot show (a map
// with non-string keys) becomes a string describing the problem.
func cborToJSON(b []byte) json.RawMessage {
	var v any
	if err := jsonDecMode.Unmarshal(b, &v); err != nil {
		out, _ := json.Marshal(fmt.Sprintf("<undecodable CBOR: %v>", err))
		return out
	}
	out, err := json.Marshal(v)
	if err != nil {
		out, _ = json.Marshal(fmt.Sprintf("<not representable as JSON: %v>", err))
	}
	return out
}

// decodeJSONValue decodes JSON keeping integers as int64, so a value written
// as 3 is stored as the CBOR integer 3, not a float.
func decodeJSONValue(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("more than one JSON value")
	}
	return fixNumbers(v), nil
}

func fixNumbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, err := x.Float64()
		if err != nil || math.IsInf(f, 0) {
			return x.String()
		}
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = fixNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = fixNumbers(e)
		}
	}
	return v
}

package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/ctxos/ctxos/cluster/vfs"
)

// ErrNotFound is returned by [Client.Get] for a path with no live entry.
var ErrNotFound = errors.New("not found")

// Client talks to a node's HTTP API. The CLI uses it, and so do nodes that
// ask each other (history, logs).
type Client struct {
	base string
	http *http.Client
}

// NewClient returns a client of the API at addr, "host:port" or a URL.
func NewClient(addr string) *Client {
	base := addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &Client{base: strings.TrimSuffix(base, "/"), http: &http.Client{}}
}

// Addr is the base URL the client talks to.
func (c *Client) Addr() string { return c.base }

// Do sends a request to the API and decodes a JSON answer into out (when
// out is not nil). A non-2xx answer becomes an error carrying the API's
// message; 404 wraps ErrNotFound.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	header := map[string]string{}
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
		header["Content-Type"] = "application/json"
	}
	resp, err := c.roundTrip(ctx, method, path, rd, header)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
	}
	return nil
}

// roundTrip sends one request and returns the response to a 2xx answer;
// any other answer is an error made from its body.
func (c *Client) roundTrip(ctx context.Context, method, path string, body io.Reader, header map[string]string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ctxos API at %s: %w", c.base, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, responseError(resp)
	}
	return resp, nil
}

func responseError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var ae apiError
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &ae) == nil && ae.Error != "" {
		msg = ae.Error
	}
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w: %s", ErrNotFound, msg)
	}
	return fmt.Errorf("%s (HTTP %d)", msg, resp.StatusCode)
}

func kvPath(p string) string {
	return "/v1/kv/" + strings.TrimPrefix(p, "/")
}

// Get reads one entry.
func (c *Client) Get(ctx context.Context, path string) (EntryView, error) {
	var e EntryView
	err := c.Do(ctx, http.MethodGet, kvPath(path), nil, &e)
	return e, err
}

// GetEntry reads one entry with its value as stored (CBOR), not as JSON.
func (c *Client) GetEntry(ctx context.Context, path string) (vfs.Entry, error) {
	var e vfs.Entry
	err := c.getCBOR(ctx, kvPath(path), &e)
	return e, err
}

// ListEntries reads every live entry under prefix with its value as stored.
func (c *Client) ListEntries(ctx context.Context, prefix string) ([]vfs.Entry, error) {
	var es []vfs.Entry
	err := c.getCBOR(ctx, kvPath(prefix)+"?recurse", &es)
	return es, err
}

func (c *Client) getCBOR(ctx context.Context, path string, out any) error {
	resp, err := c.roundTrip(ctx, http.MethodGet, path, nil, map[string]string{"Accept": ContentTypeCBOR})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != ContentTypeCBOR {
		return fmt.Errorf("GET %s: the API at %s answered %q, not CBOR: an agent older than this client?", path, c.base, ct)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read answer of GET %s: %w", path, err)
	}
	if err := vfs.Decode(b, out); err != nil {
		return fmt.Errorf("decode answer of GET %s: %w", path, err)
	}
	return nil
}

// List reads every live entry under prefix.
func (c *Client) List(ctx context.Context, prefix string) ([]EntryView, error) {
	var es []EntryView
	err := c.Do(ctx, http.MethodGet, kvPath(prefix)+"?recurse", nil, &es)
	return es, err
}

// Put writes a JSON-encodable value to an active-state path.
func (c *Client) Put(ctx context.Context, path string, v any) (EntryView, error) {
	var e EntryView
	err := c.Do(ctx, http.MethodPut, kvPath(path), v, &e)
	return e, err
}

// Delete removes an active-state entry.
func (c *Client) Delete(ctx context.Context, path string) error {
	return c.Do(ctx, http.MethodDelete, kvPath(path), nil, nil)
}

// Members lists the members the node knows of.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	var ms []Member
	err := c.Do(ctx, http.MethodGet, "/v1/members", nil, &ms)
	return ms, err
}

// Status reads the node's status view.
func (c *Client) Status(ctx context.Context) (StatusView, error) {
	var st StatusView
	err := c.Do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// Watch streams changes under prefix until ctx ends or the connection
// drops; the channel is closed then.
func (c *Client) Watch(ctx context.Context, prefix string) (<-chan WatchEvent, error) {
	resp, err := c.roundTrip(ctx, http.MethodGet, "/v1/watch/"+strings.TrimPrefix(prefix, "/"), nil, nil)
	if err != nil {
		return nil, err
	}
	out := make(chan WatchEvent)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 8<<20)
		for sc.Scan() {
			line := sc.Text()
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok {
				continue
			}
			var ev WatchEvent
			if json.Unmarshal([]byte(data), &ev) != nil {
				continue
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

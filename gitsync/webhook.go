package gitsync

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
)

// WebhookPath is where the node API mounts the handler from NewWebhook.
const WebhookPath = "/v1/hooks/git"

// MaxWebhookBody bounds a webhook request body. GitHub caps push payloads
// at 25 MB but sends only the first commits' details; 5 MiB holds any push
// a desired-state repository sees.
const MaxWebhookBody = 5 << 20

type webhook struct {
	secret  []byte
	trigger func(reason string)
	log     *slog.Logger
}

// NewWebhook returns the handler for push webhooks from GitHub
// (X-Hub-Signature-256), Gitea and Forgejo (X-Gitea-Signature,
// X-Forgejo-Signature, or X-Hub-Signature-256, which they also send) and
// GitLab (X-Gitlab-Token). The webhook only says "look now": the sync that
// follows fetches and verifies as usual, so a forged push could at worst
// cause an extra fetch, and still none gets through without the secret.
//
// Responses: 405 for a method other than POST; 413 for a body over
// MaxWebhookBody; 401 for a missing or wrong signature or token, with
// nothing triggered; 400 for a signed body that is not a push payload;
// 200 for a ping or an event other than a push, with nothing triggered;
// 202 for a push, after calling trigger with a reason naming the provider,
// ref and commit. trigger must not block (Trigger.Fire does not).
func NewWebhook(secret []byte, trigger func(reason string), logger *slog.Logger) (http.Handler, error) {
	if len(secret) == 0 {
		return nil, ErrWebhookSecret
	}
	if trigger == nil {
		return nil, errors.New("webhook: trigger function is nil")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &webhook{secret: append([]byte(nil), secret...), trigger: trigger, log: logger}, nil
}

func (h *webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeHookStatus(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	body, err := readBody(w, r)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			h.log.Warn("webhook refused", "remote", r.RemoteAddr, "reason", "body too large")
			writeHookStatus(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", MaxWebhookBody))
			return
		}
		writeHookStatus(w, http.StatusBadRequest, "cannot read body")
		return
	}
	provider, event, err := h.authenticate(r.Header, body)
	if err != nil {
		h.log.Warn("webhook refused", "remote", r.RemoteAddr, "provider", provider, "reason", err.Error())
		writeHookStatus(w, http.StatusUnauthorized, err.Error())
		return
	}
	switch event {
	case "":
		writeHookStatus(w, http.StatusBadRequest, "missing event header")
		return
	case "ping":
		writeHookStatus(w, http.StatusOK, "pong")
		return
	case "push", "Push Hook", "Tag Push Hook":
	default:
		writeHookStatus(w, http.StatusOK, "ignored event "+event)
		return
	}
	push, err := parsePush(r.Header.Get("Content-Type"), body)
	if err != nil {
		h.log.Warn("webhook refused", "remote", r.RemoteAddr, "provider", provider, "reason", err.Error())
		writeHookStatus(w, http.StatusBadRequest, err.Error())
		return
	}
	reason := fmt.Sprintf("webhook %s push %s", provider, push.Ref)
	if push.After != "" {
		reason += "@" + shortHash(push.After)
	}
	h.log.Info("webhook", "provider", provider, "ref", push.Ref, "after", push.After)
	h.trigger(reason)
	writeHookStatus(w, http.StatusAccepted, "sync queued")
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	rd := http.MaxBytesReader(w, r.Body, MaxWebhookBody)
	defer rd.Close()
	return io.ReadAll(rd)
}

// authenticate checks the request's signature or token and names the
// provider and event.
func (h *webhook) authenticate(hdr http.Header, body []byte) (provider, event string, err error) {
	switch {
	case hdr.Get("X-Gitlab-Token") != "" || hdr.Get("X-Gitlab-Event") != "":
		token := hdr.Get("X-Gitlab-Token")
		if token == "" {
			return "gitlab", "", errors.New("missing X-Gitlab-Token")
		}
		if subtle.ConstantTimeCompare([]byte(token), h.secret) != 1 {
			return "gitlab", "", errors.New("wrong X-Gitlab-Token")
		}
		return "gitlab", hdr.Get("X-Gitlab-Event"), nil
	}
	provider, event = "github", hdr.Get("X-GitHub-Event")
	switch {
	case hdr.Get("X-Forgejo-Event") != "":
		provider, event = "forgejo", hdr.Get("X-Forgejo-Event")
	case hdr.Get("X-Gitea-Event") != "":
		provider, event = "gitea", hdr.Get("X-Gitea-Event")
	}
	var (
		sig    string
		header string
	)
	switch {
	case hdr.Get("X-Hub-Signature-256") != "":
		header = "X-Hub-Signature-256"
		var ok bool
		if sig, ok = strings.CutPrefix(hdr.Get(header), "sha256="); !ok {
			return provider, "", errors.New("X-Hub-Signature-256 is not sha256=<hex>")
		}
	case hdr.Get("X-Forgejo-Signature") != "":
		header, sig = "X-Forgejo-Signature", hdr.Get("X-Forgejo-Signature")
	case hdr.Get("X-Gitea-Signature") != "":
		header, sig = "X-Gitea-Signature", hdr.Get("X-Gitea-Signature")
	default:
		return provider, "", errors.New("missing signature (X-Hub-Signature-256, X-Gitea-Signature or X-Gitlab-Token)")
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return provider, "", fmt.Errorf("%s is not hex", header)
	}
	mac := hmac.New(sha256.New, h.secret)
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return provider, "", fmt.Errorf("wrong %s", header)
	}
	return provider, event, nil
}

// pushPayload is the part of a push event that GitHub, Gitea, Forgejo and
// GitLab share.
type pushPayload struct {
	Ref   string `json:"ref"`
	After string `json:"after"`
}

// parsePush reads a push payload sent as JSON or, as GitHub can be set to,
// as a form with a "payload" field.
func parsePush(contentType string, body []byte) (pushPayload, error) {
	var p pushPayload
	if strings.HasPrefix(contentType, "application/x-www-form-urlencoded") {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return p, fmt.Errorf("malformed form body: %v", err)
		}
		body = []byte(form.Get("payload"))
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return p, fmt.Errorf("malformed push payload: %v", err)
	}
	if p.Ref == "" {
		return p, errors.New("push payload has no ref")
	}
	return p, nil
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func writeHookStatus(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"status": msg})
}

package gitsync

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
)

const hookSecret = "hook-secret-42"

const pushBody = `{"ref":"refs/heads/main","before":"0000000000000000000000000000000000000000",
"after":"1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c","repository":{"full_name":"org/infra"}}`

func hmacHex(secret, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return hex.EncodeToString(m.Sum(nil))
}

type reasons struct {
	mu  sync.Mutex
	got []string
}

func (r *reasons) fire(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, reason)
}

func TestWebhook(t *testing.T) {
	t.Parallel()
	form := url.Values{"payload": {pushBody}}.Encode()
	tests := []struct {
		name        string
		method      string
		headers     map[string]string
		body        string
		contentType string
		code        int
		reason      string // "" = nothing triggered
	}{
		{"github push", "POST", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + hmacHex(hookSecret, pushBody)},
			pushBody, "application/json", 202, "webhook github push refs/heads/main@1f2e3d4c5b6a"},
		{"github form push", "POST", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + hmacHex(hookSecret, form)},
			form, "application/x-www-form-urlencoded", 202, "webhook github push refs/heads/main@1f2e3d4c5b6a"},
		{"github ping", "POST", map[string]string{"X-GitHub-Event": "ping", "X-Hub-Signature-256": "sha256=" + hmacHex(hookSecret, `{"zen":"x"}`)},
			`{"zen":"x"}`, "application/json", 200, ""},
		{"github other event", "POST", map[string]string{"X-GitHub-Event": "issues", "X-Hub-Signature-256": "sha256=" + hmacHex(hookSecret, `{}`)},
			`{}`, "application/json", 200, ""},
		{"github wrong secret", "POST", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + hmacHex("wrong", pushBody)},
			pushBody, "application/json", 401, ""},
		{"github signature not hex", "POST", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=zz"},
			pushBody, "application/json", 401, ""},
		{"github signature without prefix", "POST", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": hmacHex(hookSecret, pushBody)},
			pushBody, "application/json", 401, ""},
		{"missing signature", "POST", map[string]string{"X-GitHub-Event": "push"}, pushBody, "application/json", 401, ""},
		{"body changed after signing", "POST", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + hmacHex(hookSecret, pushBody)},
			strings.Replace(pushBody, "main", "evil", 1), "application/json", 401, ""},
		{"malformed json", "POST", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + hmacHex(hookSecret, `{"ref":`)},
			`{"ref":`, "application/json", 400, ""},
		{"push without ref", "POST", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + hmacHex(hookSecret, `{"after":"x"}`)},
			`{"after":"x"}`, "application/json", 400, ""},
		{"missing event", "POST", map[string]string{"X-Hub-Signature-256": "sha256=" + hmacHex(hookSecret, pushBody)},
			pushBody, "application/json", 400, ""},
		{"gitea push", "POST", map[string]string{"X-Gitea-Event": "push", "X-Gitea-Signature": hmacHex(hookSecret, pushBody)},
			pushBody, "application/json", 202, "webhook gitea push refs/heads/main@1f2e3d4c5b6a"},
		{"gitea wrong secret", "POST", map[string]string{"X-Gitea-Event": "push", "X-Gitea-Signature": hmacHex("nope", pushBody)},
			pushBody, "application/json", 401, ""},
		{"forgejo push", "POST", map[string]string{"X-Forgejo-Event": "push", "X-Forgejo-Signature": hmacHex(hookSecret, pushBody)},
			pushBody, "application/json", 202, "webhook forgejo push refs/heads/main@1f2e3d4c5b6a"},
		{"gitlab push", "POST", map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": hookSecret},
			pushBody, "application/json", 202, "webhook gitlab push refs/heads/main@1f2e3d4c5b6a"},
		{"gitlab tag push", "POST", map[string]string{"X-Gitlab-Event": "Tag Push Hook", "X-Gitlab-Token": hookSecret},
			`{"ref":"refs/tags/v1.2.0","after":"abc"}`, "application/json", 202, "webhook gitlab push refs/tags/v1.2.0@abc"},
		{"gitlab wrong token", "POST", map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": hookSecret + "x"},
			pushBody, "application/json", 401, ""},
		{"gitlab missing token", "POST", map[string]string{"X-Gitlab-Event": "Push Hook"}, pushBody, "application/json", 401, ""},
		{"gitlab malformed", "POST", map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": hookSecret},
			`not json`, "application/json", 400, ""},
		{"gitlab other event", "POST", map[string]string{"X-Gitlab-Event": "Issue Hook", "X-Gitlab-Token": hookSecret},
			`{}`, "application/json", 200, ""},
		{"GET", "GET", map[string]string{"X-GitHub-Event": "push"}, "", "", 405, ""},
		{"too large", "POST", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=00"},
			`{"ref":"` + strings.Repeat("a", MaxWebhookBody) + `"}`, "application/json", 413, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var fired reasons
			h, err := NewWebhook([]byte(hookSecret), fired.fire, nil)
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest(tt.method, WebhookPath, strings.NewReader(tt.body))
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.code {
				t.Errorf("status = %d, want %d (%s)", rec.Code, tt.code, rec.Body.String())
			}
			var want []string
			if tt.reason != "" {
				want = []string{tt.reason}
			}
			if strings.Join(fired.got, "|") != strings.Join(want, "|") {
				t.Errorf("triggered %q, want %q", fired.got, want)
			}
			if strings.Contains(rec.Body.String(), hookSecret) {
				t.Errorf("response leaks the secret: %s", rec.Body.String())
			}
		})
	}
}

func TestNewWebhookNeedsSecret(t *testing.T) {
	t.Parallel()
	if _, err := NewWebhook(nil, func(string) {}, nil); !errors.Is(err, ErrWebhookSecret) {
		t.Errorf("empty secret: err = %v, want ErrWebhookSecret", err)
	}
	if _, err := NewWebhook([]byte("s"), nil, nil); err == nil {
		t.Error("nil trigger accepted")
	}
}

// TestWebhookOverHTTP drives the handler through a real server, as the node
// API mounts it.
func TestWebhookOverHTTP(t *testing.T) {
	t.Parallel()
	var fired reasons
	h, err := NewWebhook([]byte(hookSecret), fired.fire, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST "+WebhookPath, h)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	req, _ := http.NewRequest("POST", srv.URL+WebhookPath, strings.NewReader(pushBody))
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hmacHex(hookSecret, pushBody))
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || len(fired.got) != 1 {
		t.Errorf("status %d, fired %q", resp.StatusCode, fired.got)
	}
}

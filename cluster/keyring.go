package cluster

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/memberlist"
)

// ErrNoKeyring is returned when keys are reloaded on a node started without
// gossip encryption: memberlist cannot turn encryption on while running.
var ErrNoKeyring = errors.New("gossip encryption was not enabled at start (no --gossip-key-file); restart the node with a key")

// ReadKeyFile reads a gossip key file: one base64 key per line (16, 24 or 32
// bytes: AES-128, -192 or -256), the first line being the primary key that
// encrypts; every key decrypts. Blank lines and lines starting with # are
// ignored.
func ReadKeyFile(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gossip key file: %w", err)
	}
	var keys [][]byte
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("gossip key file %s line %d: not base64: %w", path, i+1, err)
		}
		if err := memberlist.ValidateKey(k); err != nil {
			return nil, fmt.Errorf("gossip key file %s line %d: %w", path, i+1, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("gossip key file %s: no key in it", path)
	}
	return keys, nil
}

// ReloadKeys makes the running keyring hold exactly keys, keys[0] being the
// primary. It installs new keys first, then switches the primary, then
// removes keys no longer listed, so a rotation done on every node in three
// steps (add the new key second, then move it first, then drop the old one)
// never leaves two nodes unable to read each other.
func (n *Node) ReloadKeys(keys [][]byte) error {
	kr := n.keyring
	if kr == nil {
		return ErrNoKeyring
	}
	if len(keys) == 0 {
		return errors.New("reload gossip keys: no key given")
	}
	for _, k := range keys {
		if err := kr.AddKey(k); err != nil {
			return fmt.Errorf("install gossip key: %w", err)
		}
	}
	if err := kr.UseKey(keys[0]); err != nil {
		return fmt.Errorf("use gossip key: %w", err)
	}
	for _, old := range kr.GetKeys() {
		keep := false
		for _, k := range keys {
			if bytes.Equal(k, old) {
				keep = true
			}
		}
		if !keep {
			if err := kr.RemoveKey(old); err != nil {
				return fmt.Errorf("remove gossip key: %w", err)
			}
		}
	}
	n.log.Info("gossip keyring reloaded", "keys", len(keys))
	return nil
}

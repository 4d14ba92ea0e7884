package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// Config describes one cluster member. Build it with [DefaultConfig] for a
// LAN cluster or [LocalConfig] for `ctxos up` and tests, then set the fields
// that differ.
type Config struct {
	Name      string            // node name, a VFS segment
	BindAddr  string            // gossip address, host:port
	Advertise string            // address peers use to reach the gossip port; "" uses BindAddr
	APIAddr   string            // address peers and the CLI use to reach the node API
	Labels    map[string]string // node labels, for placement constraints
	Roles     []string          // e.g. "syncer" for nodes that follow the Git repository
	Join      []string          // addresses of members to join through

	// JoinRetry is the wait between join attempts until one address answers.
	JoinRetry time.Duration

	// GossipKeys is the keyring: the first key is the primary (encrypts),
	// every key decrypts. Empty means gossip is not encrypted.
	GossipKeys [][]byte

	// Transport, when set, replaces memberlist's UDP/TCP transport (tests use
	// it to cut the network between groups of nodes).
	Transport memberlist.Transport

	// InlineLimit is the largest encoded entry that rides a gossip message;
	// larger ones are announced and pulled over HTTP.
	InlineLimit int

	// PullTimeout bounds one anti-entropy or large-value pull.
	PullTimeout time.Duration

	// ReconnectInterval is how often the node tries to reach one failed
	// member again. memberlist stops talking to a node it declared dead, so
	// without this two sides of a healed partition would stay apart.
	ReconnectInterval time.Duration

	// CatchUpInterval is how often the node sends its digest to one random
	// live member, which answers with what the node lacks. Gossip drops a
	// delta for some node now and then (memberlist sends each message only
	// a few times); this repairs it in seconds rather than at the next
	// push/pull (30 s or more).
	CatchUpInterval time.Duration

	Logger *slog.Logger

	profile func() *memberlist.Config
}

// DefaultConfig is a member of a LAN cluster, built on memberlist's LAN
// profile (failure detection in a few seconds, push/pull every 30 s).
func DefaultConfig() Config {
	return Config{
		BindAddr:          "0.0.0.0:7946",
		JoinRetry:         2 * time.Second,
		InlineLimit:       1000,
		PullTimeout:       10 * time.Second,
		ReconnectInterval: 10 * time.Second,
		CatchUpInterval:   5 * time.Second,
		profile:           memberlist.DefaultLANConfig,
	}
}

// LocalConfig is DefaultConfig on memberlist's local profile: shorter
// timeouts for nodes on one machine or loopback, as `ctxos up` and tests run.
func LocalConfig() Config {
	c := DefaultConfig()
	c.BindAddr = "127.0.0.1:0"
	c.JoinRetry = 200 * time.Millisecond
	c.ReconnectInterval = time.Second
	c.CatchUpInterval = time.Second
	c.profile = memberlist.DefaultLocalConfig
	return c
}

// WANConfig is DefaultConfig on memberlist's WAN profile.
func WANConfig() Config {
	c := DefaultConfig()
	c.profile = memberlist.DefaultWANConfig
	return c
}

// ConfigForProfile returns the config of a gossip profile by its name in
// the schema's sys.gossip.profile: "lan", "wan" or "local".
func ConfigForProfile(name string) (Config, error) {
	switch name {
	case "", "lan":
		return DefaultConfig(), nil
	case "wan":
		return WANConfig(), nil
	case "local":
		return LocalConfig(), nil
	}
	return Config{}, fmt.Errorf("unknown gossip profile %q (want lan, wan or local)", name)
}

// memberlistConfig turns c into memberlist's configuration.
func (c Config) memberlistConfig() (*memberlist.Config, error) {
	profile := c.profile
	if profile == nil {
		profile = memberlist.DefaultLANConfig
	}
	mc := profile()
	mc.Name = c.Name
	host, port, err := splitHostPort(c.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("bind address %q: %w", c.BindAddr, err)
	}
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = "", port
	if c.Advertise != "" {
		h, p, err := splitHostPort(c.Advertise)
		if err != nil {
			return nil, fmt.Errorf("advertise address %q: %w", c.Advertise, err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = h, p
	}
	if len(c.GossipKeys) > 0 {
		kr, err := memberlist.NewKeyring(c.GossipKeys, c.GossipKeys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	if c.Transport != nil {
		mc.Transport = c.Transport
	}
	return mc, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, errors.New("port must be a number from 0 to 65535")
	}
	return host, port, nil
}

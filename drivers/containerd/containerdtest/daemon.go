package containerdtest

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteConfig writes dir/config.toml for a containerd of a test's own:
// root, state and sockets under dir (keep dir short: a unix socket path
// must stay under 108 bytes), the CRI plugin and the debug and metrics
// listeners off. It returns the gRPC socket the daemon will serve.
func WriteConfig(dir string) (socket string, err error) {
	socket = filepath.Join(dir, "c.sock")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[metrics]
  address = ""
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), socket, socket+".ttrpc")
	return socket, os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o600)
}

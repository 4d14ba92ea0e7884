// Package e2e tests ctxos end to end on real hosts made of Linux network
// namespaces: every host is a namespace with its own address on a bridge
// (itself in a "switch" namespace, never the machine's own network), runs
// the ctxos binary as `ctxos agent`, and is driven only through the CLI,
// the way an operator would.
//
// The tests need root and iproute2 and are behind the e2e build tag:
//
//	go test -tags e2e -v ./e2e/
//
// CTXOS_UPDATE_GOLDEN=1 rewrites testdata/plan.md. CTXOS_E2E_PROFILE picks
// the gossip profile of the agents (local by default, lan for memberlist's
// LAN timings). Measured figures are logged as lines starting with FIGURE.
package e2e

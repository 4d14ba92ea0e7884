//go:build !race

package reconcile

// raceEnabled is true under the race detector.
const raceEnabled = false

//go:build race

package node_test

// raceEnabled is true under the race detector, which slows the bus and
// the sandbox several times: tests that move hundreds of megabytes skip.
const raceEnabled = true

//go:build race

package main

// raceBuild: the tests were built with -race, so the binary they run is
// too, and a child that reports a data race fails its test (childRaces).
const raceBuild = true

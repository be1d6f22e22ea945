package ledger

// SetMaxPending lowers the bound on journaled entries not yet integrated,
// for a test of the backpressure; it returns the function that restores it.
func SetMaxPending(n int) (restore func()) {
	old := maxPending
	maxPending = n
	return func() { maxPending = old }
}

package state

// Metrics counts what a Store does that its caller cannot see through
// Options.KV: benchmarks and tests read these counts to tell how much work
// the operations took. A Store calls its methods on the hot paths of reads
// and writes, from many goroutines at once: they MUST be safe for
// concurrent use and MUST NOT block.
type Metrics interface {
	// AnchorRequest counts a batch sent to the anchor.
	AnchorRequest()
	// PutCombined counts a put whose value another put of the same key
	// replaced (puts.go).
	PutCombined()
	// DirectRead counts a direct get of a key's newest value
	// (Options.Conn, direct.go).
	DirectRead()
}

// noMetrics is the Metrics of a store made without any: it counts nothing.
type noMetrics struct{}

func (noMetrics) AnchorRequest() {}
func (noMetrics) PutCombined()   {}
func (noMetrics) DirectRead()    {}

package sandbox

// imageBases holds, for each module (by the hash of its instrumented code),
// the snapshot image that the module's later snapshots are stored against:
// the first of its images, for as long as any function, or any image
// stored against it, holds it. Snapshots of one module (the functions of
// one language engine, the versions of one function, the same module with
// another environment) differ in a few pages, so each later image holds
// only those (cow_linux.go). Which image is the base changes what is
// shared, never what an image holds: every image reads back exactly as its
// snapshot.
type imageBases struct {
	m map[string]*image // guarded by imagesMu (cow_linux.go); an image leaves when its last holder closes it
}

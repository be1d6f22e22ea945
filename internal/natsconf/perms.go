// Package natsconf generates what a deployment's NATS needs to be more than
// open transport: a CA and a server certificate for TLS, the server
// configuration files, and one nkey identity per role whose publish and
// subscribe permissions are derived from the subjects in internal/bus.
//
// It must never weaken a permission to make something work without saying
// so in docs/operations.md, and never write a seed anywhere but the files
// of the role that owns it (mode 0600). See docs/adr/0006-nats-permissions.md.
package natsconf

import (
	"fmt"

	"github.com/cloister-faas/cloister/internal/bus"
)

// Role is a Cloister role that connects to NATS with its own identity.
type Role string

// The roles. The trigger runner runs beside the gateway, in its process,
// and uses the gateway's identity.
const (
	Coordinator Role = "coordinator"
	Gateway     Role = "gateway"
	Worker      Role = "worker"
)

// Roles lists every role, in the order of the configuration files.
var Roles = []Role{Coordinator, Gateway, Worker}

// InboxPrefix is the reply-inbox prefix of role's connections. Each role may
// subscribe only under its own prefix, so that no role can read the replies
// sent to another (for example, function keys sent to workers).
func InboxPrefix(r Role) string { return "_INBOX_" + string(r) }

// Permissions are one role's NATS permissions. Every list is an allow list:
// anything not on it is refused by the server. Responders publish their
// replies through allow_responses, never through an allowed _INBOX subject.
type Permissions struct {
	Publish        []string
	Subscribe      []string
	AllowResponses bool
}

// Stream names behind the buckets (JetStream's naming).
func kvStream(bucket string) string  { return "KV_" + bucket }
func objStream(bucket string) string { return "OBJ_" + bucket }

// baseBuckets are the key-value buckets bus.OpenStores opens; every role
// opens them.
var baseBuckets = []string{bus.BucketRegistry, bus.BucketAuth, bus.BucketState}

// asyncBuckets are the key-value buckets bus.OpenAsync opens.
var asyncBuckets = []string{bus.BucketActivations, bus.BucketAsyncNonces, bus.BucketTriggers, bus.BucketSequences, bus.BucketOpenWhisk}

// jsStream is what a role may do with one stream through the JetStream
// API: create or update it (every role opens its stores with
// CreateOrUpdate), read its info and messages, and manage consumers on it.
// Deleting or purging a whole stream is left out: no role does either.
func jsStream(stream string) []string {
	return []string{
		"$JS.API.STREAM.CREATE." + stream,
		"$JS.API.STREAM.UPDATE." + stream,
		"$JS.API.STREAM.INFO." + stream,
		"$JS.API.STREAM.MSG.GET." + stream,
		"$JS.API.DIRECT.GET." + stream,
		"$JS.API.DIRECT.GET." + stream + ".>",
		"$JS.API.CONSUMER.*." + stream,
		"$JS.API.CONSUMER.*." + stream + ".>",
		"$JS.API.CONSUMER.DURABLE.CREATE." + stream + ".>",
		"$JS.API.CONSUMER.MSG.NEXT." + stream + ".>",
		"$JS.ACK." + stream + ".>",
		"$JS.FC." + stream + ".>",
	}
}

// jsStores are the JetStream permissions of bus.OpenStores (and, with
// async, bus.OpenAsync): the API of each stream and the subjects its
// messages are written on.
func jsStores(async bool) []string {
	out := []string{"$JS.API.INFO"}
	for _, b := range baseBuckets {
		out = append(out, jsStream(kvStream(b))...)
		out = append(out, "$KV."+b+".>")
	}
	// The replay log, and the info of the bucket it replaced, which
	// bus.OpenStores reads to copy what is left in it (ADR 0026).
	out = append(out, jsStream(bus.StreamReplay)...)
	out = append(out, bus.SubjectReplay, "$JS.API.STREAM.INFO."+kvStream(bus.BucketReplay))
	out = append(out, jsStream(objStream(bus.BucketBundles))...)
	out = append(out, "$O."+bus.BucketBundles+".>",
		// Deleting an object purges its chunks.
		"$JS.API.STREAM.PURGE."+objStream(bus.BucketBundles))
	if async {
		for _, b := range asyncBuckets {
			out = append(out, jsStream(kvStream(b))...)
			out = append(out, "$KV."+b+".>")
		}
		out = append(out, jsStream(bus.StreamAsync)...)
		out = append(out, jsStream(bus.StreamDead)...)
	}
	return out
}

// jsCoordinator is the coordinators' own JetStream: the journals and the
// lease bucket, which no other role may read or write.
func jsCoordinator() []string {
	var out []string
	for _, j := range []struct{ stream, subject string }{
		{bus.StreamAnchorJournal, bus.SubjectAnchorJournal},
		{bus.StreamLedgerJournal, bus.SubjectLedgerJournal},
		{bus.StreamControlJournal, bus.SubjectControlJournal},
	} {
		out = append(out, jsStream(j.stream)...)
		out = append(out, j.subject)
	}
	out = append(out, jsStream(kvStream(bus.BucketCoord))...)
	return append(out, "$KV."+bus.BucketCoord+".>")
}

// PermissionsFor returns role r's permissions. They follow the subjects of
// internal/bus: a gateway cannot answer cloister.invoke or any coordinator
// subject, nor announce a manifest change or ask for admission; a worker
// cannot subscribe to cloister.coord.>; only the coordinator answers there.
func PermissionsFor(r Role) (Permissions, error) {
	inbox := InboxPrefix(r) + ".>"
	switch r {
	case Coordinator:
		return Permissions{
			Publish: append([]string{
				bus.SubjectDeployed,
				bus.SubjectManifestChanged,
				bus.SubjectWorkerInspect,
				// A coordinator that joins asks a peer for the secrets;
				// a standby announces itself.
				"cloister.coord.peer.>",
			}, append(jsStores(false), jsCoordinator()...)...),
			// Workers' advertisements tell the coordinator which are alive.
			Subscribe:      []string{"cloister.coord.>", bus.SubjectWorkerStatus, inbox},
			AllowResponses: true,
		}, nil
	case Gateway:
		return Permissions{
			Publish: append([]string{
				bus.SubjectInvoke,
				bus.SubjectInvokeWorker + "*",
				bus.SubjectAttestation,
				bus.SubjectRegister,
				bus.SubjectManifestHistory,
				// The gateway relays an admin's signed manifest change;
				// the coordinator checks the signature. It may ask, never
				// answer (it cannot subscribe to cloister.coord.>).
				bus.SubjectManifestSet,
				// Likewise an owner's signed invoker policy update.
				bus.SubjectPolicy,
				bus.SubjectResultToken,
				bus.SubjectCoordStatus,
				bus.SubjectGatewayStatus,
				bus.SubjectLedgerLookup,
				bus.SubjectLedgerRead,
				bus.SubjectDeleted,
				bus.SubjectWorkersPing,
				bus.SubjectAsyncQueued,
				bus.SubjectAsyncPrefix + ">",
				bus.SubjectDeadPrefix + ">",
			}, jsStores(true)...),
			Subscribe: []string{
				bus.SubjectManifestChanged,
				bus.SubjectWorkerStatus,
				bus.SubjectGatewayStatus,
				// The trigger runner's subject triggers (trigger.EventsRoot).
				"events.>",
				inbox,
			},
			// The gateway answers nothing; it needs no responses.
			AllowResponses: false,
		}, nil
	case Worker:
		return Permissions{
			Publish: append([]string{
				bus.SubjectAttestation,
				bus.SubjectAdmit,
				bus.SubjectFunctionKey,
				bus.SubjectLedgerAppend,
				bus.SubjectStateAnchor,
				bus.SubjectWorkerStatus,
				bus.SubjectAsyncQueued,
				bus.SubjectDeadPrefix + ">",
			}, jsStores(true)...),
			Subscribe: []string{
				bus.SubjectInvoke,
				bus.SubjectInvokeWorker + "*",
				bus.SubjectWorkerInspect,
				bus.SubjectDeployed,
				bus.SubjectDeleted,
				bus.SubjectManifestChanged,
				bus.SubjectWorkersPing,
				bus.SubjectAsyncQueued,
				inbox,
			},
			AllowResponses: true,
		}, nil
	}
	return Permissions{}, fmt.Errorf("%w: %q", ErrUnknownRole, r)
}

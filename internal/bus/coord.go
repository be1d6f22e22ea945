package bus

import "time"

// The coordinators' own streams and subjects. Only the coordinator role
// may use them (internal/natsconf): the journals hold the coordinators'
// durable state, sealed under their master secret
// (internal/journal, docs/adr/0007-coordinator-failover.md).
const (
	// StreamAnchorJournal is the state anchor's journal.
	StreamAnchorJournal  = "CLOISTER_ANCHOR"
	SubjectAnchorJournal = "cloister.journal.anchor"
	// StreamLedgerJournal fixes the order of the ledger's entries: each
	// coordinator's tile log is a function of it.
	StreamLedgerJournal  = "CLOISTER_LEDGER"
	SubjectLedgerJournal = "cloister.journal.ledger"
	// StreamControlJournal holds the manifest history and the admitted
	// workers.
	StreamControlJournal  = "CLOISTER_CONTROL"
	SubjectControlJournal = "cloister.journal.control"
	// BucketCoord holds the coordinators' lease (who is active) and the
	// deployment's public identity.
	BucketCoord = "cloister_coord"
	// SubjectPeerRecover is where a coordinator that holds the secrets
	// answers an attested peer's request for them.
	SubjectPeerRecover = "cloister.coord.peer.recover"
	// SubjectCoordStandby carries standby coordinators' announcements
	// (wire.CoordinatorPeer), every StatusInterval.
	SubjectCoordStandby = "cloister.coord.peer.standby"
	// SubjectCoordStatus asks the active coordinator for its status
	// (wire.CoordinatorStatus).
	SubjectCoordStatus = "cloister.coord.status"
	// SubjectGatewayStatus carries gateways' announcements
	// (wire.GatewayStatus), every StatusInterval.
	SubjectGatewayStatus = "cloister.gateways.status"
)

// StatusInterval is how often standby coordinators and gateways announce
// themselves; one not heard from for three intervals is listed as gone.
const StatusInterval = 2 * time.Second

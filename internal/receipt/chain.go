package receipt

import (
	"errors"
	"fmt"
)

// ErrBrokenChain reports a sequence's receipts that do not form one chain.
var ErrBrokenChain = errors.New("receipt: sequence chain is broken")

// VerifyChain verifies the receipts of one sequence invocation, step 1
// first: each receipt verifies on its own, all name the same sequence in
// the same namespace, step i has Step i, step 1 has no Prev and every later
// step's Prev is the entry hash of the step before, and each step's request
// is the previous step's response (the link commitment). first, if set,
// is what the first receipt must match (the sealed request's hash); last is
// checked against the final receipt.
//
// A single receipt that is not part of a sequence is a chain of one.
func (v *Verifier) VerifyChain(chain []*Signed, first, last Expect) ([]*Verified, error) {
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w: no receipts", ErrBrokenChain)
	}
	out := make([]*Verified, 0, len(chain))
	prevHash := ""
	for i, s := range chain {
		exp := Expect{}
		if i == 0 {
			exp = first
		}
		if i == len(chain)-1 {
			exp = mergeExpect(exp, last)
		}
		vr, err := v.Verify(s, exp)
		if err != nil {
			return nil, fmt.Errorf("step %d: %w", i+1, err)
		}
		r := vr.Receipt
		if len(chain) > 1 || r.Sequence != "" {
			if r.Sequence == "" || r.Step != i+1 {
				return nil, fmt.Errorf("%w: receipt %d is step %d of %q", ErrBrokenChain, i+1, r.Step, r.Sequence)
			}
		}
		if r.Prev != prevHash {
			return nil, fmt.Errorf("%w: step %d names previous receipt %q, want %q", ErrBrokenChain, i+1, r.Prev, prevHash)
		}
		if i > 0 {
			p := out[i-1].Receipt
			if r.Sequence != p.Sequence || r.Namespace != p.Namespace {
				return nil, fmt.Errorf("%w: step %d belongs to %s/%s, step %d to %s/%s", ErrBrokenChain, i+1, r.Namespace, r.Sequence, i, p.Namespace, p.Sequence)
			}
			if p.Status != "ok" {
				return nil, fmt.Errorf("%w: step %d follows failed step %d (%s)", ErrBrokenChain, i+1, i, p.Status)
			}
			if r.RequestHash != p.ResponseHash {
				return nil, fmt.Errorf("%w: step %d's input is not step %d's output", ErrBrokenChain, i+1, i)
			}
		}
		entry, err := s.Entry()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		prevHash = EntryHash(entry)
		out = append(out, vr)
	}
	return out, nil
}

func mergeExpect(a, b Expect) Expect {
	pick := func(x, y string) string {
		if y != "" {
			return y
		}
		return x
	}
	a.Namespace = pick(a.Namespace, b.Namespace)
	a.Function = pick(a.Function, b.Function)
	a.CodeHash = pick(a.CodeHash, b.CodeHash)
	a.SnapshotHash = pick(a.SnapshotHash, b.SnapshotHash)
	a.RequestHash = pick(a.RequestHash, b.RequestHash)
	a.ResponseHash = pick(a.ResponseHash, b.ResponseHash)
	if b.Version != 0 {
		a.Version = b.Version
	}
	return a
}

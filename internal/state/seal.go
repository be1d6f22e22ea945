package state

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sync"
)

// KeySize is the size of a function's state key.
const KeySize = 32

// DeriveKey derives the state key of function (ns, name) from the
// coordinator's master secret. It does not depend on the function's version
// or code: every version of a function shares its state.
func DeriveKey(master []byte, ns, name string) ([]byte, error) {
	return hkdf.Key(sha256.New, master, nil, "cloister/v1/state-key\x00"+ns+"\x00"+name, KeySize)
}

// keys are the subkeys of one function's state key.
type keys struct {
	value  cipher.AEAD // seals values
	anchor cipher.AEAD // seals messages to and from the anchor
	name   []byte      // HMAC key for the names of keys in the bucket
	macs   sync.Pool   // of HMAC-SHA256 under name
}

func newKeys(stateKey []byte) (*keys, error) {
	if len(stateKey) != KeySize {
		return nil, fmt.Errorf("state key is %d bytes, want %d", len(stateKey), KeySize)
	}
	sub := func(label string) ([]byte, error) {
		return hkdf.Key(sha256.New, stateKey, nil, "cloister/v1/state/"+label, 32)
	}
	gcm := func(label string) (cipher.AEAD, error) {
		k, err := sub(label)
		if err != nil {
			return nil, err
		}
		b, err := aes.NewCipher(k)
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(b)
	}
	var ks keys
	var err error
	if ks.value, err = gcm("value"); err != nil {
		return nil, err
	}
	if ks.anchor, err = gcm("anchor"); err != nil {
		return nil, err
	}
	if ks.name, err = sub("name"); err != nil {
		return nil, err
	}
	return &ks, nil
}

// storeKey is the name of a key in the bucket: the function's names in the
// clear (they are public in the registry) and an HMAC of the key, so that
// the host does not learn key names.
func (k *keys) storeKey(ns, name string, key []byte) string {
	m, _ := k.macs.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha256.New, k.name)
	}
	m.Reset()
	m.Write(key)
	var sum [sha256.Size]byte
	m.Sum(sum[:0])
	k.macs.Put(m)
	return "s." + ns + "." + name + "." + hex.EncodeToString(sum[:24])
}

// The envelope of a sealed value in the bucket:
//
//	"CST1" ‖ version (8, big endian) ‖ flags (1) ‖ nonce (12) ‖ AES-GCM ciphertext
//
// The AAD is "cloister/v1/state-value" ‖ 0 ‖ namespace ‖ 0 ‖ function ‖ 0 ‖
// len(key) (4) ‖ key ‖ version (8) ‖ flags (1). A tombstone (flag 1) seals
// an empty value and marks a delete.
const (
	envMagic      = "CST1"
	envHeader     = len(envMagic) + 8 + 1
	nonceSize     = 12
	flagTombstone = 1
)

func valueAAD(ns, name string, key []byte, version uint64, flags byte) []byte {
	b := make([]byte, 0, 40+len(ns)+len(name)+len(key))
	b = append(b, "cloister/v1/state-value\x00"...)
	b = append(b, ns...)
	b = append(b, 0)
	b = append(b, name...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(key)))
	b = append(b, key...)
	b = binary.BigEndian.AppendUint64(b, version)
	return append(b, flags)
}

func (k *keys) seal(ns, name string, key []byte, version uint64, flags byte, value []byte) []byte {
	out := make([]byte, envHeader+nonceSize, envHeader+nonceSize+len(value)+k.value.Overhead())
	copy(out, envMagic)
	binary.BigEndian.PutUint64(out[4:], version)
	out[12] = flags
	rand.Read(out[envHeader:])
	return k.value.Seal(out, out[envHeader:envHeader+nonceSize], value, valueAAD(ns, name, key, version, flags))
}

var errEnvelope = errors.New("not a sealed state value")

// header reads an envelope's version and flags without authenticating them.
func header(env []byte) (version uint64, flags byte, err error) {
	if len(env) < envHeader+nonceSize || string(env[:4]) != envMagic {
		return 0, 0, errEnvelope
	}
	return binary.BigEndian.Uint64(env[4:]), env[12], nil
}

// open authenticates an envelope for (ns, name, key) and returns its
// version, flags and value.
func (k *keys) open(ns, name string, key, env []byte) (version uint64, flags byte, value []byte, err error) {
	version, flags, err = header(env)
	if err != nil {
		return 0, 0, nil, err
	}
	value, err = k.value.Open(nil, env[envHeader:envHeader+nonceSize], env[envHeader+nonceSize:], valueAAD(ns, name, key, version, flags))
	if err != nil {
		return 0, 0, nil, errEnvelope
	}
	return version, flags, value, nil
}

func digest(env []byte) []byte {
	d := sha256.Sum256(env)
	return d[:]
}

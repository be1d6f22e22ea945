//go:build !linux

package hw

import "github.com/cloister-faas/cloister/internal/tee"

// Detect finds no hardware outside Linux: the guest interfaces are Linux's.
func Detect() (tee.Kind, error) { return "", ErrNoHardware }

func openHardware(k tee.Kind) (tee.TEE, error) { return nil, ErrNoHardware }

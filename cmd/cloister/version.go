package main

import (
	"fmt"
	"io"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// newVersionCmd is `cloister version`: the module version and the commit
// the binary was built from.
func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version and the commit of this binary",
		Example: `  cloister version`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bi, ok := debug.ReadBuildInfo()
			if !ok {
				return fmt.Errorf("reading build info: not available in this binary")
			}
			return printVersion(cmd.OutOrStdout(), bi)
		},
	}
}

// printVersion writes the module version, the VCS revision (and whether the
// tree held changes not committed), the commit time and the Go version.
func printVersion(w io.Writer, bi *debug.BuildInfo) error {
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	version := bi.Main.Version
	if version == "" {
		version = "(devel)"
	}
	commit := settings["vcs.revision"]
	switch {
	case commit == "":
		commit = "unknown (built without VCS information)"
	case settings["vcs.modified"] == "true":
		commit += " (dirty: the tree held uncommitted changes)"
	}
	_, err := fmt.Fprintf(w, "cloister %s\ncommit:  %s\n", version, commit)
	if err != nil {
		return err
	}
	if t := settings["vcs.time"]; t != "" {
		fmt.Fprintf(w, "date:    %s\n", t) // a failed write was reported above
	}
	_, err = fmt.Fprintf(w, "go:      %s\n", bi.GoVersion)
	return err
}

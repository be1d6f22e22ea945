package node

import (
	"bufio"
	"os"
	"strings"
)

// ReadEnvFile parses KEY=VALUE lines (with an optional "export ") as
// written to client.env.
func ReadEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close() // read only: nothing is lost if closing fails
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		out[strings.TrimSpace(k)] = unquote(strings.TrimSpace(v))
	}
	return out, sc.Err()
}

// formatEnv writes vals as lines a POSIX shell can source, each exported,
// with comment as the first line.
func formatEnv(comment string, vals ...[2]string) []byte {
	var b strings.Builder
	b.WriteString("# " + comment + "\n")
	for _, kv := range vals {
		b.WriteString("export " + kv[0] + "=" + shellQuote(kv[1]) + "\n")
	}
	return []byte(b.String())
}

// shellQuote returns s as one word of a POSIX shell: as it is if it has
// nothing the shell would read specially, or single-quoted.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@%+=:,./-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// unquote undoes shellQuote. A value in double quotes loses them (files
// written by hand); any other value is taken as it is.
func unquote(v string) string {
	switch {
	case strings.HasPrefix(v, "'"):
		var b strings.Builder
		for i := 0; i < len(v); i++ {
			switch {
			case v[i] == '\'':
				end := strings.IndexByte(v[i+1:], '\'')
				if end < 0 {
					end = len(v) - i - 1 // unterminated: take the rest
				}
				b.WriteString(v[i+1 : i+1+end])
				i += end + 1
			case v[i] == '\\' && i+1 < len(v):
				i++
				b.WriteByte(v[i])
			default:
				b.WriteByte(v[i])
			}
		}
		return b.String()
	case len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"':
		return v[1 : len(v)-1]
	}
	return v
}

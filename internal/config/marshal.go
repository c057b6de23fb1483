package config

import (
	"bytes"
	"fmt"

	"gopkg.in/yaml.v3"
)

// Marshal renders c as the YAML file Load reads. Only what is set is written: a zero value is
// left out so that Load applies its default, which is also what a zero value means in the
// file. The one setting whose zero differs from its default, shutdown.exit_code_on_cut, is
// therefore only written when it is not 0. Durations are written as Go duration strings.
func Marshal(c *Config) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("render sidecar config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("render sidecar config: %w", err)
	}
	return b.Bytes(), nil
}

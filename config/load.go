package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"

	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Error is a configuration that cannot be used: unreadable, malformed or
// invalid. Commands exit 2 on it.
type Error struct {
	Source string
	Err    error
}

func (e *Error) Error() string { return fmt.Sprintf("invalid configuration %s: %v", e.Source, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// IsError tells whether err is (or wraps) a configuration error.
func IsError(err error) bool {
	var ce *Error
	return errors.As(err, &ce)
}

// LoadFile reads, decodes, defaults and validates the file at path. An empty
// path yields the defaults.
func LoadFile(path string) (*Config, error) {
	c, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, &Error{Source: path, Err: err}
	}
	return c, nil
}

// ReadFile reads, decodes and defaults the file at path without validating
// it, so that flags can override fields first. An empty path yields the
// defaults.
func ReadFile(path string) (*Config, error) {
	if path == "" {
		return Default(), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{Source: path, Err: err}
	}
	c, err := Decode(data)
	if err != nil {
		return nil, &Error{Source: path, Err: err}
	}
	return c, nil
}

// Decode parses a YAML or JSON document strictly (unknown and duplicate
// fields are errors naming the field) and fills in defaults. It does not
// validate, so that flags can override fields first.
func Decode(data []byte) (*Config, error) {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("parsing YAML: %w", err)
	}
	var generic any
	if err := json.Unmarshal(js, &generic); err != nil {
		return nil, fmt.Errorf("parsing YAML: %w", err)
	}
	if errs := typeCheck(generic, reflect.TypeFor[Config](), nil); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	c := &Config{}
	strict, err := kjson.UnmarshalStrict(js, c)
	if err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	if len(strict) > 0 {
		return nil, errors.Join(strict...)
	}
	SetDefaults(c)
	return c, nil
}

// Marshal renders the configuration as YAML, as --print-config shows it.
func Marshal(c *Config) ([]byte, error) {
	return yaml.Marshal(c)
}

// WriteFile writes the configuration to path as a --config file (mode 0600).
func WriteFile(path string, c *Config) error {
	data, err := Marshal(c)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

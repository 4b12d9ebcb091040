// Package chart holds the tests that keep the Helm chart's documentation
// and schema in step with its values.yaml: every value is listed in the
// chart's README (`go test ./deploy/chart -update` rewrites the table from
// the values' `# --` comments) and described by values.schema.json.
package chart

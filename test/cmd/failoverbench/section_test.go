package main

import "testing"

func TestSetSectionKeepsTheRest(t *testing.T) {
	doc := "# T\n\n<!-- bench-failover:paths -->\nold table\n<!-- /bench-failover:paths -->\n\n## Hand-written\ntext\n"
	got := setSection(doc, "paths", "new table\n")
	if want := "# T\n\n<!-- bench-failover:paths -->\nnew table\n<!-- /bench-failover:paths -->\n\n## Hand-written\ntext\n"; got != want {
		t.Fatalf("replaced:\n%q\nwant\n%q", got, want)
	}
	got = setSection(got, "writer", "writer table\n")
	if want := "# T\n\n<!-- bench-failover:paths -->\nnew table\n<!-- /bench-failover:paths -->\n\n## Hand-written\ntext\n\n<!-- bench-failover:writer -->\nwriter table\n<!-- /bench-failover:writer -->\n"; got != want {
		t.Fatalf("appended:\n%q\nwant\n%q", got, want)
	}
}

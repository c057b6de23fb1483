package config

import (
	"strings"
	"testing"
)

func TestConfigTokenCacheMaxEntries(t *testing.T) {
	c, err := load(t, writeConfig(t, minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.AWS.TokenCacheMaxEntries != 1024 {
		t.Errorf("default aws.token_cache_max_entries = %d, want 1024", c.AWS.TokenCacheMaxEntries)
	}
	t.Setenv("RDSVALET_AWS_TOKEN_CACHE_MAX_ENTRIES", "50")
	if c, err = load(t, writeConfig(t, minimal)); err != nil || c.AWS.TokenCacheMaxEntries != 50 {
		t.Errorf("from env: %v %v", c, err)
	}
	for _, v := range []string{"0", "-1"} {
		t.Setenv("RDSVALET_AWS_TOKEN_CACHE_MAX_ENTRIES", v)
		if _, err := load(t, writeConfig(t, minimal)); err == nil || !strings.Contains(err.Error(), "aws.token_cache_max_entries") {
			t.Errorf("token_cache_max_entries %s: error %v, want one naming the key", v, err)
		}
	}
}

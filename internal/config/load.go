package config

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"gopkg.in/yaml.v3"
)

// EnvPrefix prefixes every environment variable the sidecar reads.
const EnvPrefix = "RDSVALET"

// flagKeys maps each flag to the key it sets; the same key is reachable as RDSVALET_<KEY>.
var flagKeys = []struct{ flag, key, usage string }{
	{"log-level", "log.level", "log level: debug, info, warn, error"},
	{"log-format", "log.format", "log format: json, console"},
	{"admin-listen", "admin.listen", "address of the admin server (metrics, probes)"},
	{"admin-readiness", "admin.readiness", "readiness policy: process, healthy-path"},
	{"aws-region", "aws.region", "AWS region the IAM tokens are signed for"},
	{"shutdown-min-delay", "shutdown.min_delay", "how long listeners stay open after SIGTERM"},
	{"shutdown-max-delay", "shutdown.max_delay", "how long to wait for sessions to end after SIGTERM"},
}

// AddFlags registers the flags Load understands on fs.
func AddFlags(fs *pflag.FlagSet) {
	fs.String("config", "", "path of the YAML configuration file")
	for _, f := range flagKeys {
		fs.String(f.flag, "", f.usage+" ("+EnvPrefix+"_"+envKey(f.key)+")")
	}
}

func envKey(key string) string { return strings.ToUpper(strings.ReplaceAll(key, ".", "_")) }

// Load builds the configuration from defaults, the file named by --config (or
// RDSVALET_CONFIG), the environment and the flags that were set, then validates it. The error
// lists every problem found.
func Load(fs *pflag.FlagSet) (*Config, error) {
	v := viper.New()
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()

	// Defaults make every scalar key known to viper, so that env vars reach Unmarshal.
	d := Defaults()
	v.SetDefault("log.level", d.Log.Level)
	v.SetDefault("log.format", d.Log.Format)
	v.SetDefault("admin.listen", d.Admin.Listen)
	v.SetDefault("admin.readiness", d.Admin.Readiness)
	v.SetDefault("aws.region", firstNonEmpty(os.Getenv("AWS_REGION"), os.Getenv("AWS_DEFAULT_REGION")))
	v.SetDefault("aws.credentials_refresh_window", d.AWS.CredentialsRefreshWindow)
	v.SetDefault("aws.token_cache_max_entries", d.AWS.TokenCacheMaxEntries)
	v.SetDefault("dns.server", "")
	v.SetDefault("unix_sockets.dir", "")
	v.SetDefault("unix_sockets.mode", "")
	v.SetDefault("unix_sockets.owner", "")
	v.SetDefault("unix_sockets.group", "")
	v.SetDefault("shutdown.min_delay", d.Shutdown.MinDelay)
	v.SetDefault("shutdown.max_delay", d.Shutdown.MaxDelay)
	v.SetDefault("shutdown.kill_grace", d.Shutdown.KillGrace)
	v.SetDefault("shutdown.exit_code_on_cut", d.Shutdown.ExitCodeOnCut)
	v.SetDefault("login_budget.per_second", d.LoginBudget.PerSecond)
	v.SetDefault("login_budget.burst", d.LoginBudget.Burst)

	file := os.Getenv(EnvPrefix + "_CONFIG")
	if fs != nil {
		if f := fs.Lookup("config"); f != nil && f.Changed {
			file = f.Value.String()
		}
	}
	if file != "" {
		v.SetConfigFile(file)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("read config file %s: %w", file, err)
		}
	}
	// Lists cannot be spelled as flat env vars; a whole listeners list may come as YAML.
	if raw := os.Getenv(EnvPrefix + "_LISTENERS"); raw != "" {
		var ls []map[string]any
		if err := yaml.Unmarshal([]byte(raw), &ls); err != nil {
			return nil, fmt.Errorf("%s_LISTENERS: not a YAML list of listeners: %w", EnvPrefix, err)
		}
		v.Set("listeners", ls)
	}
	if fs != nil {
		for _, f := range flagKeys {
			if fl := fs.Lookup(f.flag); fl != nil && fl.Changed {
				v.Set(f.key, fl.Value.String())
			}
		}
	}

	var c Config
	if err := v.UnmarshalExact(&c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c.applyListenerDefaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return &c, nil
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// LoadFile is Load with --config set to path and no other flag: what the sidecar makes of that
// file (the environment still applies). Tests of the configs the project ships use it.
func LoadFile(path string) (*Config, error) {
	fs := pflag.NewFlagSet("sidecar", pflag.ContinueOnError)
	AddFlags(fs)
	if err := fs.Parse([]string{"--config", path}); err != nil {
		return nil, err
	}
	return Load(fs)
}

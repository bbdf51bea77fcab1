package cli

import (
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"":                       `""`,
		"eth0":                   `"eth0"`,
		"a b;rm -rf /":           `"a b;rm -rf /"`,
		"\x1b[31m":               `"\x1b[31m"`,
		strings.Repeat("x", 100): `"` + strings.Repeat("x", MaxQuoted) + `"... (100 bytes)`,
	} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
	// A cut never splits a character.
	if got := Quote(strings.Repeat("é", 100)); !strings.HasPrefix(got, `"éé`) || strings.Contains(got, `\x`) {
		t.Errorf("Quote of a long UTF-8 value: %s", got)
	}
}

func TestLine(t *testing.T) {
	long := strings.Repeat("A", 100_000)
	for _, in := range []string{
		"--peer " + long + ": lookup " + long + ": no such host",
		strings.Repeat("word ", 100_000),
		"two\nlines\r\nand \x1b[2J escape \xff",
	} {
		out := Line(in)
		if len(out) > MaxLine+3 || strings.ContainsAny(out, "\n\r\x1b") {
			t.Errorf("Line: %d bytes: %.200q", len(out), out)
		}
	}
	if got := Line("--peer " + long + ": no such host"); !strings.HasPrefix(got, "--peer AAA") || !strings.HasSuffix(got, " no such host") {
		t.Errorf("Line keeps neither the flag nor the reason: %.300s", got)
	}
	if got := Line("a\x1b[2Jb\xffc"); got != `a\x1b[2Jb\xffc` {
		t.Errorf("Line escapes: %s", got)
	}
}

func TestParseFlags(t *testing.T) {
	newFS := func() *flag.FlagSet {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.Int("count", 0, "")
		fs.Duration("duration", time.Second, "")
		fs.Bool("json", false, "")
		fs.String("name", "", "")
		return fs
	}
	long := strings.Repeat("9", 100_000)
	for _, tc := range []struct {
		args []string
		want string // the whole message
	}{
		{[]string{"--count", "many"}, `--count "many": want a whole number`},
		{[]string{"--count", long}, `--count "` + strings.Repeat("9", MaxQuoted) + `"... (100000 bytes): out of range; want a whole number`},
		{[]string{"--duration", "soon"}, `--duration "soon": want a duration such as 200ms or 3s`},
		{[]string{"--duration", "-1s"}, `--duration -1s: negative duration`},
		{[]string{"--json=maybe"}, `--json "maybe": want true or false`},
		{[]string{"-bogus"}, `unknown flag --bogus`},
		{[]string{"--" + long}, `unknown flag --"` + strings.Repeat("9", MaxQuoted) + `"... (100000 bytes)`},
		{[]string{"--name"}, `--name: needs a value`},
		{[]string{"---x"}, `bad flag syntax "---x"`},
	} {
		err := ParseFlags(newFS(), tc.args)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%.40q: %v, want %s", tc.args, err, tc.want)
		}
	}
	fs := newFS()
	if err := ParseFlags(fs, []string{"--count", "3", "--json", "--duration", "0s", "rest"}); err != nil {
		t.Fatal(err)
	}
	if fs.Lookup("count").Value.(flag.Getter).Get() != 3 || fs.Arg(0) != "rest" {
		t.Errorf("values not set: count %v, args %q", fs.Lookup("count").Value, fs.Args())
	}
	if err := ParseFlags(newFS(), []string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}

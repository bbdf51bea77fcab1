package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Bounds on what a message repeats of its input.
const (
	// MaxQuoted is the most bytes of a value Quote shows.
	MaxQuoted = 64
	// MaxWord is the longest run of non-blank bytes Line keeps whole.
	MaxWord = 160
	// MaxLine is the most bytes Line returns.
	MaxLine = 1024
)

// Quote returns s quoted as Go's %q quotes it (control characters and
// invalid UTF-8 escaped), cut to its first MaxQuoted bytes, with the
// length said, when it is longer: "aaaa"... (100000 bytes).
func Quote(s string) string {
	if len(s) <= MaxQuoted {
		return strconv.Quote(s)
	}
	cut := MaxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(s[:cut]), len(s))
}

// Line makes msg fit to print as one line of a message: line breaks become
// "; ", other control characters are escaped (\x1b), a run of more than
// MaxWord non-blank bytes is cut to its start and its length, and the
// whole is cut at MaxLine bytes.
func Line(msg string) string {
	msg = strings.Join(strings.Fields(strings.NewReplacer("\r\n", "; ", "\n", "; ", "\r", "; ").Replace(msg)), " ")
	var b strings.Builder
	word := 0
	for i := 0; i < len(msg); {
		r, n := utf8.DecodeRuneInString(msg[i:])
		switch {
		case r == ' ':
			word = 0
			b.WriteByte(' ')
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, msg[i])
			word += 4
		case !unicode.IsPrint(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			word += len(q) - 2
		default:
			b.WriteString(msg[i : i+n])
			word += n
		}
		i += n
		if word > MaxWord {
			// Skip to the end of this run of non-blank bytes.
			end := strings.IndexByte(msg[i:], ' ')
			if end < 0 {
				end = len(msg) - i
			}
			fmt.Fprintf(&b, "... (%d more bytes)", end)
			i += end
			word = 0
		}
		if b.Len() > MaxLine {
			break
		}
	}
	out := b.String()
	if len(out) > MaxLine {
		cut := MaxLine
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = out[:cut] + "..."
	}
	return out
}

// DashName is how a message names the flag name: --name, or, for a name
// no flag could have (an unknown flag that is long or holds odd bytes),
// quoted and bounded.
func DashName(name string) string {
	if name != "" && len(name) <= MaxQuoted && strings.IndexFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) < 0 {
		return "--" + name
	}
	return "--" + Quote(name)
}

// failure records the first flag whose value was refused.
type failure struct {
	name, value string
	err         error
}

// recorder wraps a flag.Value to record a refused value.
type recorder struct {
	flag.Value
	name string
	f    *failure
}

func (r *recorder) Set(s string) error {
	err := r.Value.Set(s)
	if err != nil && r.f.err == nil {
		r.f.name, r.f.value, r.f.err = r.name, s, err
	}
	return err
}

// boolRecorder is a recorder for a boolean flag (one that needs no value).
type boolRecorder struct{ recorder }

func (*boolRecorder) IsBoolFlag() bool { return true }

// ParseFlags parses args into fs. -h or --help returns flag.ErrHelp
// (printing nothing: the caller prints its usage); any other mistake is an
// error of one line that names the flag as --name, quotes at most
// MaxQuoted bytes of the value, and says what is wanted. A duration flag
// given a negative value is refused. fs must be ContinueOnError; its
// output is discarded.
func ParseFlags(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	var f failure
	orig := map[string]flag.Value{}
	fs.VisitAll(func(fl *flag.Flag) {
		orig[fl.Name] = fl.Value
		r := recorder{Value: fl.Value, name: fl.Name, f: &f}
		if bf, ok := fl.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
			fl.Value = &boolRecorder{r}
		} else {
			fl.Value = &r
		}
	})
	err := fs.Parse(args)
	fs.VisitAll(func(fl *flag.Flag) { fl.Value = orig[fl.Name] })
	if errors.Is(err, flag.ErrHelp) {
		return flag.ErrHelp
	}
	if err != nil {
		return flagError(fs, err, &f)
	}
	var neg error
	fs.Visit(func(fl *flag.Flag) {
		if g, ok := fl.Value.(flag.Getter); ok && neg == nil {
			if d, ok := g.Get().(time.Duration); ok && d < 0 {
				neg = fmt.Errorf("--%s %v: negative duration", fl.Name, d)
			}
		}
	})
	return neg
}

// flagError rewrites an error of the flag package.
func flagError(fs *flag.FlagSet, err error, f *failure) error {
	if f.err != nil {
		want := "invalid value"
		if g, ok := fs.Lookup(f.name).Value.(flag.Getter); ok {
			switch g.Get().(type) {
			case time.Duration:
				want = "want a duration such as 200ms or 3s"
			case int, int64:
				want = "want a whole number"
			case uint, uint64:
				want = "want a whole number, 0 or more"
			case float64:
				want = "want a number"
			case bool:
				want = "want true or false"
			default:
				want = Line(f.err.Error())
			}
		} else {
			want = Line(f.err.Error())
		}
		if errors.Is(f.err, strconv.ErrRange) || strings.Contains(f.err.Error(), "out of range") {
			want = "out of range; " + want
		}
		return fmt.Errorf("--%s %s: %s", f.name, Quote(f.value), want)
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return fmt.Errorf("unknown flag %s", DashName(name))
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return fmt.Errorf("%s: needs a value", DashName(name))
	}
	if arg, ok := strings.CutPrefix(msg, "bad flag syntax: "); ok {
		return fmt.Errorf("bad flag syntax %s", Quote(arg))
	}
	return errors.New(Line(msg))
}

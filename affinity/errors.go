package affinity

import "errors"

// ErrNotSupported is returned by every host operation on a platform other
// than Linux, and (wrapped) where the running kernel lacks the control.
var ErrNotSupported = errors.New("not supported on this platform")

// ErrNotTrusted is wrapped by the errors of files that root would read and
// act on (journals, profiles, lock files) when someone other than root
// owns them or could have written them.
var ErrNotTrusted = errors.New("not trusted")

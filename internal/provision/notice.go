package provision

// notice logs a warning the operator has to act on (e.g. a reboot AWS will not do on its
// own) once per run, however often the resource is observed.
func (e *env) notice(msg string) {
	if e.noticed == nil {
		e.noticed = map[string]bool{}
	}
	if e.noticed[msg] {
		return
	}
	e.noticed[msg] = true
	e.p.log.Warn(msg)
}

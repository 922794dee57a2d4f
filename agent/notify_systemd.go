package agent

import (
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
)

// Notifier tells the service manager about the agent. The systemd one writes
// to $NOTIFY_SOCKET; without it (not under systemd) every call does nothing.
type Notifier interface {
	// Ready: kubelet.conf and a valid client certificate are in place.
	Ready()
	// Status: one line saying what the agent is doing.
	Status(line string)
	// Watchdog: the working loop is alive.
	Watchdog()
	// Stopping: the agent is shutting down.
	Stopping()
	// WatchdogInterval is how often Watchdog must be called; 0 when off.
	WatchdogInterval() time.Duration
}

type systemdNotifier struct{ log *zap.Logger }

// NewSystemdNotifier notifies systemd through $NOTIFY_SOCKET.
func NewSystemdNotifier(log *zap.Logger) Notifier { return systemdNotifier{log: log} }

func (n systemdNotifier) send(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("notifying systemd", zap.Error(err))
	}
}

func (n systemdNotifier) Ready()             { n.send(daemon.SdNotifyReady) }
func (n systemdNotifier) Status(line string) { n.send("STATUS=" + line) }
func (n systemdNotifier) Watchdog()          { n.send(daemon.SdNotifyWatchdog) }
func (n systemdNotifier) Stopping()          { n.send(daemon.SdNotifyStopping) }

func (n systemdNotifier) WatchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		n.log.Warn("reading the watchdog interval", zap.Error(err))
		return 0
	}
	return d
}

// nopNotifier is for one-shot commands, which are not the service.
type NopNotifier struct{}

func (NopNotifier) Ready()                          {}
func (NopNotifier) Status(string)                   {}
func (NopNotifier) Watchdog()                       {}
func (NopNotifier) Stopping()                       {}
func (NopNotifier) WatchdogInterval() time.Duration { return 0 }

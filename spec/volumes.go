package spec

import (
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxVolumes bounds spec.system.volumes: 16 volumes per replica. Each is
// an LXD volume per slot, observed on every run.
const MaxVolumes = 16

// MaxVolumeSize bounds a volume's size: 1 PiB, as limits.memory.
const MaxVolumeSize = MaxMemory

// VolumeDevicePrefix starts the name of the disk device that attaches a
// volume to the instance: "berth-volume-<name>". Spec devices may not use
// it.
const VolumeDevicePrefix = "berth-volume-"

// DeviceName is the name of the instance's disk device for the volume.
func (v SystemVolume) DeviceName() string { return VolumeDevicePrefix + v.Name }

var (
	systemVolumeFields = fields[SystemVolume]{
		{name: "name", required: true, decode: func(d *decoder, v *yaml.Node, vol *SystemVolume) {
			if s, ok := d.keptStr(v, checkVolumeName); ok {
				vol.Name = s
			}
		}},
		{name: "path", required: true, decode: func(d *decoder, v *yaml.Node, vol *SystemVolume) {
			if s, ok := d.keptStr(v, checkVolumePath); ok {
				vol.Path = s
			}
		}},
		{name: "size", required: true, decode: func(d *decoder, v *yaml.Node, vol *SystemVolume) {
			d.limit(v, checkVolumeSize, &vol.Size)
		}},
		{name: "pool", decode: func(d *decoder, v *yaml.Node, vol *SystemVolume) {
			if s, ok := d.str(v, ""); ok {
				vol.Pool = s
				if s == "" || strings.ContainsAny(s, "/ \t\n") || len(s) > 63 {
					d.errorf(d.resolve(v), "%q is not a valid storage pool name (1 to 63 characters, no '/' or spaces); leave pool out for the pool of the instance's root disk", s)
				}
			}
		}},
		{name: "snapshots", decode: func(d *decoder, v *yaml.Node, vol *SystemVolume) {
			var s VolumeSnapshots
			if object(d, v, volumeSnapshotFields, &s) && s != (VolumeSnapshots{}) {
				vol.Snapshots = &s
			}
		}},
		enumField("onScaleDown", []string{VolumeRetain, VolumeDelete}, func(v *SystemVolume) *string { return &v.OnScaleDown }),
		enumField("onAppDelete", []string{VolumeRetain, VolumeDelete}, func(v *SystemVolume) *string { return &v.OnAppDelete }),
	}
	volumeSnapshotFields = fields[VolumeSnapshots]{
		{name: "schedule", decode: func(d *decoder, v *yaml.Node, s *VolumeSnapshots) {
			if str, ok := d.keptStr(v, checkSnapshotSchedule); ok {
				s.Schedule = str
			}
		}},
		{name: "expiry", decode: func(d *decoder, v *yaml.Node, s *VolumeSnapshots) {
			if str, ok := d.str(v, ""); ok {
				s.Expiry = str
				if !snapshotExpiryRE.MatchString(str) {
					d.errorf(d.resolve(v), `snapshot expiry must be LXD's form, a number and a unit (M minutes, H hours, d days, w weeks, m months, y years), several separated by spaces, like "7d" or "1w 2d"; got %q`, str)
				}
			}
		}},
	}
)

var (
	snapshotExpiryRE = regexp.MustCompile(`^[1-9][0-9]{0,5}[MHdwmy]( [1-9][0-9]{0,5}[MHdwmy])*$`)
	// A cron line of five fields, or one of the @ shorthands LXD takes.
	snapshotCronRE = regexp.MustCompile(`^[0-9*/,-]+( [0-9A-Za-z*/,-]+){4}$`)
)

// volumeSystemPaths are the folders a volume may not be mounted at,
// under, or above: mounting there hides or replaces what the system
// needs to boot and run.
var volumeSystemPaths = []string{"/proc", "/sys", "/dev", "/etc", "/run", "/boot"}

// checkVolumeName checks a volume's name: a DNS label.
func checkVolumeName(s string) string {
	if !nameRE.MatchString(s) || len(s) > 63 {
		return fmt.Sprintf("%q is not a valid volume name: use lowercase letters, digits and '-', start with a letter and end with a letter or digit (a DNS label)", s)
	}
	return ""
}

// checkVolumePath checks where a volume is mounted: absolute, clean, and
// not "/", a system folder, in one or above one.
func checkVolumePath(p string) string {
	switch {
	case !path.IsAbs(p):
		return fmt.Sprintf("must be an absolute path in the system container, got %q", p)
	case path.Clean(p) != p:
		return fmt.Sprintf("must be a clean path (no '//', '.', '..' or trailing '/'): write %q, got %q", path.Clean(p), p)
	case p == "/":
		return `a volume cannot be mounted at "/": it would hide the whole system`
	}
	for _, dir := range volumeSystemPaths {
		switch {
		case p == dir || strings.HasPrefix(p, dir+"/"):
			return fmt.Sprintf("a volume cannot be mounted at %q: it is in the system folder %s", p, dir)
		case strings.HasPrefix(dir, p+"/"):
			return fmt.Sprintf("a volume cannot be mounted at %q: it would hide the system folder %s", p, dir)
		}
	}
	return ""
}

// checkVolumeSize checks a volume's size: limits.memory's units, no
// percentage, more than 0 and at most MaxVolumeSize.
func checkVolumeSize(s string) string {
	n, ok := sizeBytes(s)
	switch {
	case !ok && !memoryRE.MatchString(s):
		return fmt.Sprintf(`volume size must be a size like "10GiB", "512MiB", "1GB", or a byte count, got %q`, s)
	case !ok || n > MaxVolumeSize:
		return fmt.Sprintf("volume size %q is too large: at most 1PiB", s)
	case n == 0:
		return "volume size must be more than 0"
	}
	return ""
}

// VolumeBytes is a valid size in bytes (0 for one that is not).
func VolumeBytes(s string) uint64 {
	n, _ := sizeBytes(s)
	return n
}

func checkSnapshotSchedule(s string) string {
	switch s {
	case "@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@annually", "@yearly":
		return ""
	}
	if !snapshotCronRE.MatchString(s) {
		return fmt.Sprintf(`snapshot schedule must be a cron line of five fields ("0 3 * * *") or @hourly, @daily, @weekly, @monthly or @yearly; got %q`, s)
	}
	return ""
}

// systemVolumes reads spec.system.volumes: names and paths unique, no
// path inside another's.
func (d *decoder) systemVolumes(n *yaml.Node) []SystemVolume {
	items, _ := d.list(n)
	if len(items) > MaxVolumes {
		d.errorf(d.resolve(n), "has %d volumes; a replica may have at most %d", len(items), MaxVolumes)
		return nil
	}
	var out []SystemVolume
	names := map[string]int{}
	for i, item := range items {
		d.pushIndex(i, item)
		v := SystemVolume{OnScaleDown: VolumeRetain, OnAppDelete: VolumeRetain}
		if object(d, item, systemVolumeFields, &v) {
			if first, dup := names[v.Name]; dup && v.Name != "" {
				d.push("name", nil)
				d.errorf(d.member(item, "name"), "volume name %q is already used by volumes[%d]", v.Name, first)
				d.pop()
			} else if v.Name != "" {
				names[v.Name] = i
			}
			if v.Path != "" && checkVolumePath(v.Path) == "" {
				for j, o := range out {
					if o.Path == "" || checkVolumePath(o.Path) != "" {
						continue
					}
					if o.Path == v.Path || strings.HasPrefix(v.Path, o.Path+"/") || strings.HasPrefix(o.Path, v.Path+"/") {
						d.push("path", nil)
						d.errorf(d.member(item, "path"), "path %q overlaps volumes[%d] at %q: each volume needs a folder of its own", v.Path, j, o.Path)
						d.pop()
						break
					}
				}
			}
		}
		out = append(out, v)
		d.pop()
	}
	if len(out) > 0 {
		d.volumesAt = d.mark(d.resolve(n))
	}
	return out
}

// checkVolumes runs the checks of spec.system.volumes that need the whole
// app: the LXD volume names' length, and the devices they must not clash
// with.
func (d *decoder) checkVolumes(app *App) {
	if d.volumesAt == nil {
		return
	}
	sys := &app.Spec.System
	slot := strconv.Itoa(app.Spec.HighestSlot())
	for _, v := range sys.Volumes {
		if v.Name == "" {
			continue
		}
		if name := app.Metadata.Name + "-" + v.Name + "-" + slot; len(name) > maxInstanceName {
			d.errorAt(d.volumesAt, "volume %q: its LXD volume name %q has %d characters, at most %d are allowed; shorten the app or volume name", v.Name, name, len(name), maxInstanceName)
		}
		for dev, keys := range sys.Devices {
			switch {
			case dev == v.DeviceName():
				d.errorAt(d.volumesAt, "volume %q: system.devices.%s has the name of the volume's own device; rename the device", v.Name, dev)
			case keys["type"] == "disk" && keys["path"] != "" && path.Clean(keys["path"]) == v.Path:
				d.errorAt(d.volumesAt, "volume %q: system.devices.%s is a disk at the same path %s", v.Name, dev, v.Path)
			}
		}
	}
	for dev := range sys.Devices {
		if strings.HasPrefix(dev, VolumeDevicePrefix) && !sys.hasVolumeDevice(dev) {
			d.errorAt(d.volumesAt, "system.devices.%s: device names starting with %q are reserved for system.volumes", dev, VolumeDevicePrefix)
		}
	}
}

func (s *System) hasVolumeDevice(dev string) bool {
	for _, v := range s.Volumes {
		if v.DeviceName() == dev {
			return true
		}
	}
	return false
}

import { useCallback, useEffect, useState } from "react";
import { Room, supportsAudioOutputSelection } from "livekit-client";
import { appError, type AppError } from "../errors/errors";
import { rememberDevice } from "./mediaChoices";

/**
 * Microphone, camera and speaker pickers: in the lobby before joining, and for the call in
 * progress. In the call, choices go through LiveKit (`switchActiveDevice`), which restarts the
 * published track on the new input, or sets the output (`setSinkId`) on every remote audio
 * element it plays, now and for later arrivals.
 */

export type DeviceKind = "audioinput" | "videoinput" | "audiooutput";

export const PICKERS: readonly { kind: DeviceKind; label: string; testId: string }[] = [
  { kind: "audioinput", label: "Microphone", testId: "select_microphone" },
  { kind: "videoinput", label: "Camera", testId: "select_camera" },
  { kind: "audiooutput", label: "Speaker", testId: "select_speaker" },
];

export type DeviceLists = Record<DeviceKind, MediaDeviceInfo[]>;

/**
 * The browser's devices, refreshed when they change (a headset plugged in) and whenever
 * `revision` changes: labels only appear once a capture permission has been granted.
 */
export function useMediaDevices(revision: unknown = 0): DeviceLists {
  const [devices, setDevices] = useState<DeviceLists>({ audioinput: [], videoinput: [], audiooutput: [] });
  const refresh = useCallback(async () => {
    // Never prompts: the lobby's preview (or the call) asks for the permission itself.
    const all = await Room.getLocalDevices(undefined, false).catch(() => [] as MediaDeviceInfo[]);
    setDevices({
      audioinput: all.filter((d) => d.kind === "audioinput"),
      videoinput: all.filter((d) => d.kind === "videoinput"),
      audiooutput: all.filter((d) => d.kind === "audiooutput"),
    });
  }, []);
  useEffect(() => {
    const onChange = (): void => void refresh();
    onChange();
    navigator.mediaDevices?.addEventListener("devicechange", onChange);
    return () => {
      navigator.mediaDevices?.removeEventListener("devicechange", onChange);
    };
  }, [refresh, revision]);
  return devices;
}

function deviceLabel(device: MediaDeviceInfo, index: number, label: string): string {
  return device.label || `${label} ${index + 1}`;
}

/** Where the browser cannot choose the output (Safari, older Firefox), say so instead of failing. */
export function SpeakerUnsupported() {
  return (
    <p className="device-note" data-testid="speaker_unsupported">
      This browser plays the call on the system&apos;s default speaker; change it in your system settings.
    </p>
  );
}

interface SelectProps {
  label: string;
  testId: string;
  devices: MediaDeviceInfo[];
  /** The device in use; the first one when unknown. */
  value: string | undefined;
  disabled: boolean;
  onChange: (deviceId: string) => void;
}

export function DeviceSelect({ label, testId, devices, value, disabled, onChange }: SelectProps) {
  const selected = devices.some((d) => d.deviceId === value) ? value : (devices[0]?.deviceId ?? "");
  return (
    <label className="device-picker">
      <span>{label}</span>
      <select
        data-testid={testId}
        aria-label={label}
        value={selected}
        disabled={disabled || devices.length === 0}
        onChange={(e) => onChange(e.target.value)}
      >
        {devices.length === 0 && <option value="">No {label.toLowerCase()} found</option>}
        {devices.map((d, i) => (
          <option key={d.deviceId || i} value={d.deviceId}>
            {deviceLabel(d, i, label)}
          </option>
        ))}
      </select>
    </label>
  );
}

interface SelectsProps {
  devices: DeviceLists;
  /** The device in use for each kind (the first one when unknown). */
  value: (kind: DeviceKind) => string | undefined;
  disabled: boolean;
  onChange: (kind: DeviceKind, label: string, deviceId: string) => void;
}

/** The three pickers, or for the speaker a note where the browser cannot choose the output. */
export function DeviceSelects({ devices, value, disabled, onChange }: SelectsProps) {
  const outputSelectable = supportsAudioOutputSelection();
  return (
    <div className="device-pickers" role="group" aria-label="Devices">
      {PICKERS.map(({ kind, label, testId }) =>
        kind === "audiooutput" && !outputSelectable ? (
          <SpeakerUnsupported key={kind} />
        ) : (
          <DeviceSelect
            key={kind}
            label={label}
            testId={testId}
            devices={devices[kind]}
            value={value(kind)}
            disabled={disabled}
            onChange={(id) => onChange(kind, label, id)}
          />
        ),
      )}
    </div>
  );
}

interface Props {
  room: Room;
  disabled: boolean;
  onError: (error: AppError) => void;
}

/** The pickers of the call in progress. */
export function DevicePickers({ room, disabled, onError }: Props) {
  // Re-read after a switch so the selects show LiveKit's active device.
  const [switched, setSwitched] = useState(0);
  const devices = useMediaDevices(switched);

  const choose = async (kind: DeviceKind, label: string, deviceId: string): Promise<void> => {
    try {
      const ok = await room.switchActiveDevice(kind, deviceId);
      if (!ok) throw new Error(`switchActiveDevice(${kind}) returned false`);
      rememberDevice(kind, deviceId);
    } catch (err) {
      console.warn(`Could not switch the ${label.toLowerCase()}`, err);
      onError(appError("media", `Could not switch to that ${label.toLowerCase()}.`));
    }
    setSwitched((n) => n + 1);
  };

  return (
    <DeviceSelects
      devices={devices}
      value={(kind) => room.getActiveDevice(kind)}
      disabled={disabled}
      onChange={(kind, label, id) => void choose(kind, label, id)}
    />
  );
}

import { useCallback, useEffect, useState } from "react";
import { Room, RoomEvent, supportsAudioOutputSelection } from "livekit-client";
import { appError, type AppError } from "../errors/errors";

/**
 * Microphone, camera and speaker pickers for the call in progress. Choices go through LiveKit
 * (`switchActiveDevice`), which restarts the published track on the new input, or sets the
 * output (`setSinkId`) on every remote audio element it plays, now and for later arrivals.
 */

type Kind = "audioinput" | "videoinput" | "audiooutput";

const PICKERS: { kind: Kind; label: string; testId: string }[] = [
  { kind: "audioinput", label: "Microphone", testId: "select_microphone" },
  { kind: "videoinput", label: "Camera", testId: "select_camera" },
  { kind: "audiooutput", label: "Speaker", testId: "select_speaker" },
];

interface Props {
  room: Room;
  disabled: boolean;
  onError: (error: AppError) => void;
}

function deviceLabel(device: MediaDeviceInfo, index: number, label: string): string {
  return device.label || `${label} ${index + 1}`;
}

function useDevices(room: Room): Record<Kind, MediaDeviceInfo[]> {
  const [devices, setDevices] = useState<Record<Kind, MediaDeviceInfo[]>>({ audioinput: [], videoinput: [], audiooutput: [] });
  const refresh = useCallback(async () => {
    // Permission was granted when the call started, so labels are known; asking again is not needed.
    const all = await Room.getLocalDevices(undefined, false);
    setDevices({
      audioinput: all.filter((d) => d.kind === "audioinput"),
      videoinput: all.filter((d) => d.kind === "videoinput"),
      audiooutput: all.filter((d) => d.kind === "audiooutput"),
    });
  }, []);
  useEffect(() => {
    const onChange = (): void => void refresh();
    onChange();
    room.on(RoomEvent.MediaDevicesChanged, onChange);
    return () => {
      room.off(RoomEvent.MediaDevicesChanged, onChange);
    };
  }, [room, refresh]);
  return devices;
}

export function DevicePickers({ room, disabled, onError }: Props) {
  const devices = useDevices(room);
  // Re-rendered after a switch so the selects show LiveKit's active device.
  const [, setSwitched] = useState(0);
  const outputSelectable = supportsAudioOutputSelection();

  const choose = async (kind: Kind, label: string, deviceId: string): Promise<void> => {
    try {
      const ok = await room.switchActiveDevice(kind, deviceId);
      if (!ok) throw new Error(`switchActiveDevice(${kind}) returned false`);
    } catch (err) {
      console.warn(`Could not switch the ${label.toLowerCase()}`, err);
      onError(appError("media", `Could not switch to that ${label.toLowerCase()}.`));
    }
    setSwitched((n) => n + 1);
  };

  return (
    <div className="device-pickers" role="group" aria-label="Devices">
      {PICKERS.map(({ kind, label, testId }) => {
        if (kind === "audiooutput" && !outputSelectable) {
          return (
            <p key={kind} className="device-note" data-testid="speaker_unsupported">
              This browser plays the call on the system&apos;s default speaker; change it in your system settings.
            </p>
          );
        }
        const list = devices[kind];
        const active = room.getActiveDevice(kind) ?? list[0]?.deviceId ?? "";
        return (
          <label key={kind} className="device-picker">
            <span>{label}</span>
            <select
              data-testid={testId}
              aria-label={label}
              value={list.some((d) => d.deviceId === active) ? active : (list[0]?.deviceId ?? "")}
              disabled={disabled || list.length === 0}
              onChange={(e) => void choose(kind, label, e.target.value)}
            >
              {list.length === 0 && <option value="">No {label.toLowerCase()} found</option>}
              {list.map((d, i) => (
                <option key={d.deviceId || i} value={d.deviceId}>
                  {deviceLabel(d, i, label)}
                </option>
              ))}
            </select>
          </label>
        );
      })}
    </div>
  );
}

import { useEffect, useRef, useState } from 'preact/hooks';

/**
 * `value`, changing at most once per `intervalMs` (the last change always comes through): a count
 * that moves with every event of a rollout reloads what depends on it a few times, not thousands.
 */
export function useThrottledValue<T>(value: T, intervalMs: number): T {
  const [shown, setShown] = useState(value);
  const last = useRef(0);
  useEffect(() => {
    if (Object.is(value, shown)) return;
    const wait = Math.max(0, last.current + intervalMs - Date.now());
    const timer = setTimeout(() => {
      last.current = Date.now();
      setShown(value);
    }, wait);
    return () => clearTimeout(timer);
  }, [value, shown, intervalMs]);
  return shown;
}

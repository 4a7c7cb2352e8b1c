/** A baking batch's countdown to `bake_ends_at`, ticking every second on its own. */
import { useEffect, useState } from 'preact/hooks';
import { formatCountdown } from './deployment-model.ts';

export function BakeTimer({ endsAt }: { endsAt: string }) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, []);
  const endsAtMs = Date.parse(endsAt);
  return (
    <span class="bake-timer">
      {endsAtMs > now ? (
        <>
          bake ends in <time dateTime={endsAt}>{formatCountdown(endsAtMs, now)}</time>
        </>
      ) : (
        'bake ending…'
      )}
    </span>
  );
}

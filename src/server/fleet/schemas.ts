/** The fleet overview on the wire. */
import { Type } from 'typebox';
import { Nullable } from '../infra/schemas.ts';

/** How many tags the overview lists. */
export const FLEET_TOP_TAGS = 100;

const count = () => Type.Integer({ minimum: 0 });

/** `GET /api/v1/fleet`. */
export const Fleet = Type.Object({
  devices: Type.Object({ total: count(), online: count(), offline: count() }),
  versions: Type.Array(Type.Object({ version: Type.String(), devices: count(), online: count() }), {
    description: 'every version the devices run, most devices first',
  }),
  models: Type.Array(Type.Object({ model: Nullable(Type.String()), devices: count() }), {
    description: 'most devices first; null: devices without a model',
  }),
  tags: Type.Array(Type.Object({ tag: Type.String(), devices: count() }), {
    description: `the ${FLEET_TOP_TAGS} tags most devices carry, most devices first`,
  }),
  updates: Type.Object({ active: Type.Integer({ minimum: 0, description: 'queued, dispatched or in progress' }) }),
  deployments: Type.Object({ active: Type.Integer({ minimum: 0, description: 'not finished (paused ones too)' }) }),
});

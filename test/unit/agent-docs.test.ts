/**
 * docs/devices.md shows files, not copies of them: every block in it is either a shell command
 * (```sh), a picture (```text), or marked `<!-- file: path -->` and then equal, byte for byte, to
 * that file of the repository — one the package ships and the tests run.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';

describe('docs/devices.md', () => {
  it('shows every file as it is in the repository', async () => {
    const doc = await readFile('docs/devices.md', 'utf8');
    const blocks = [...doc.matchAll(/(?:<!-- file: (\S+) -->\n)?```(\w*)\n([\s\S]*?)```\n/g)];
    assert.ok(blocks.length >= 8);
    let files = 0;
    for (const [, path, lang, content] of blocks) {
      if (path === undefined) {
        assert.ok(lang === 'sh' || lang === 'text', `a block that is no file and no command:\n${content}`);
        continue;
      }
      files += 1;
      assert.equal(content, await readFile(path, 'utf8'), `${path} as shown in docs/devices.md`);
    }
    assert.ok(files >= 6, 'agent.json, fw_env.config, uboot-env.txt, boot.cmd, 05_edgeflow, sw-description');
  });
});

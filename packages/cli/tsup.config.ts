import { packageConfig } from '../../tsup.base.ts';

export default packageConfig({
  platform: 'node',
  entry: { index: 'src/index.ts', bin: 'src/bin.ts' },
  banner: { js: '#!/usr/bin/env node' },
});

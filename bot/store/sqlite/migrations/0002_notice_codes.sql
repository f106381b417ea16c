-- Notices were saved as English sentences; they become codes with parameters (JSON), so that the words
-- are chosen when a job is shown, in the reader's language. The three sentences the bot ever saved:
--   "Answered from the cache: this image was described recently, so it cost nothing."
--   "{Failed} was unavailable, so {Used} answered instead."   (Freepik / Novita)
--   "The message has {count} images; the first three were used."

UPDATE jobs SET notice = '{"code": "cached"}'
WHERE notice LIKE 'Answered from the cache:%';

UPDATE jobs SET notice = '{"code": "fallback", "failed": "freepik", "used": "novita"}'
WHERE notice = 'Freepik was unavailable, so Novita answered instead.';

UPDATE jobs SET notice = '{"code": "fallback", "failed": "novita", "used": "freepik"}'
WHERE notice = 'Novita was unavailable, so Freepik answered instead.';

-- "The message has " is 16 characters: the count starts at the 17th.
UPDATE jobs SET notice = '{"code": "more_images", "count": '
    || CAST(substr(notice, 17, instr(notice, ' images') - 17) AS INTEGER) || '}'
WHERE notice LIKE 'The message has % images; the first three were used.';

-- Anything else (nothing the bot wrote) is dropped rather than shown as an unknown code.
UPDATE jobs SET notice = NULL WHERE notice IS NOT NULL AND notice NOT LIKE '{%';

// Whisper's languages (src/hushscribe/languages.py): code → [name in the language itself,
// English name as verbose_json reports it]. Native names are the same in every page language.

export const LANGUAGES = [
  ['en', 'English', 'english'], ['zh', '中文', 'chinese'], ['de', 'Deutsch', 'german'],
  ['es', 'Español', 'spanish'], ['ru', 'Русский', 'russian'], ['ko', '한국어', 'korean'],
  ['fr', 'Français', 'french'], ['ja', '日本語', 'japanese'], ['pt', 'Português', 'portuguese'],
  ['tr', 'Türkçe', 'turkish'], ['pl', 'Polski', 'polish'], ['ca', 'Català', 'catalan'],
  ['nl', 'Nederlands', 'dutch'], ['ar', 'العربية', 'arabic'], ['sv', 'Svenska', 'swedish'],
  ['it', 'Italiano', 'italian'], ['id', 'Bahasa Indonesia', 'indonesian'],
  ['hi', 'हिन्दी', 'hindi'], ['fi', 'Suomi', 'finnish'], ['vi', 'Tiếng Việt', 'vietnamese'],
  ['he', 'עברית', 'hebrew'], ['uk', 'Українська', 'ukrainian'], ['el', 'Ελληνικά', 'greek'],
  ['ms', 'Bahasa Melayu', 'malay'], ['cs', 'Čeština', 'czech'], ['ro', 'Română', 'romanian'],
  ['da', 'Dansk', 'danish'], ['hu', 'Magyar', 'hungarian'], ['ta', 'தமிழ்', 'tamil'],
  ['no', 'Norsk', 'norwegian'], ['th', 'ไทย', 'thai'], ['ur', 'اردو', 'urdu'],
  ['hr', 'Hrvatski', 'croatian'], ['bg', 'Български', 'bulgarian'],
  ['lt', 'Lietuvių', 'lithuanian'], ['la', 'Latina', 'latin'], ['mi', 'Māori', 'maori'],
  ['ml', 'മലയാളം', 'malayalam'], ['cy', 'Cymraeg', 'welsh'], ['sk', 'Slovenčina', 'slovak'],
  ['te', 'తెలుగు', 'telugu'], ['fa', 'فارسی', 'persian'], ['lv', 'Latviešu', 'latvian'],
  ['bn', 'বাংলা', 'bengali'], ['sr', 'Српски', 'serbian'], ['az', 'Azərbaycanca', 'azerbaijani'],
  ['sl', 'Slovenščina', 'slovenian'], ['kn', 'ಕನ್ನಡ', 'kannada'], ['et', 'Eesti', 'estonian'],
  ['mk', 'Македонски', 'macedonian'], ['br', 'Brezhoneg', 'breton'], ['eu', 'Euskara', 'basque'],
  ['is', 'Íslenska', 'icelandic'], ['hy', 'Հայերեն', 'armenian'], ['ne', 'नेपाली', 'nepali'],
  ['mn', 'Монгол', 'mongolian'], ['bs', 'Bosanski', 'bosnian'], ['kk', 'Қазақша', 'kazakh'],
  ['sq', 'Shqip', 'albanian'], ['sw', 'Kiswahili', 'swahili'], ['gl', 'Galego', 'galician'],
  ['mr', 'मराठी', 'marathi'], ['pa', 'ਪੰਜਾਬੀ', 'punjabi'], ['si', 'සිංහල', 'sinhala'],
  ['km', 'ខ្មែរ', 'khmer'], ['sn', 'ChiShona', 'shona'], ['yo', 'Yorùbá', 'yoruba'],
  ['so', 'Soomaali', 'somali'], ['af', 'Afrikaans', 'afrikaans'], ['oc', 'Occitan', 'occitan'],
  ['ka', 'ქართული', 'georgian'], ['be', 'Беларуская', 'belarusian'], ['tg', 'Тоҷикӣ', 'tajik'],
  ['sd', 'سنڌي', 'sindhi'], ['gu', 'ગુજરાતી', 'gujarati'], ['am', 'አማርኛ', 'amharic'],
  ['yi', 'ייִדיש', 'yiddish'], ['lo', 'ລາວ', 'lao'], ['uz', 'Oʻzbekcha', 'uzbek'],
  ['fo', 'Føroyskt', 'faroese'], ['ht', 'Kreyòl ayisyen', 'haitian creole'],
  ['ps', 'پښتو', 'pashto'], ['tk', 'Türkmençe', 'turkmen'], ['nn', 'Nynorsk', 'nynorsk'],
  ['mt', 'Malti', 'maltese'], ['sa', 'संस्कृतम्', 'sanskrit'],
  ['lb', 'Lëtzebuergesch', 'luxembourgish'], ['my', 'မြန်မာ', 'myanmar'],
  ['bo', 'བོད་ཡིག', 'tibetan'], ['tl', 'Tagalog', 'tagalog'], ['mg', 'Malagasy', 'malagasy'],
  ['as', 'অসমীয়া', 'assamese'], ['tt', 'Татарча', 'tatar'], ['haw', 'ʻŌlelo Hawaiʻi', 'hawaiian'],
  ['ln', 'Lingála', 'lingala'], ['ha', 'Hausa', 'hausa'], ['ba', 'Башҡортса', 'bashkir'],
  ['jw', 'Basa Jawa', 'javanese'], ['su', 'Basa Sunda', 'sundanese'], ['yue', '粵語', 'cantonese'],
];

const BY_CODE = new Map(LANGUAGES.map(([code, native]) => [code, native]));
const CODE_BY_NAME = new Map(LANGUAGES.map(([code, , english]) => [english, code]));

/** A language code or English name (as verbose_json has it) → its code, or null. */
export function languageCode(value) {
  if (!value) return null;
  const key = String(value).trim().toLowerCase();
  if (BY_CODE.has(key)) return key;
  return CODE_BY_NAME.get(key) || null;
}

/** The language's own name ("Deutsch") for a code or English name; the value itself if unknown. */
export function nativeName(value) {
  const code = languageCode(value);
  return code ? BY_CODE.get(code) : String(value || '');
}

/** Codes in the order the language menu shows them: Chinese and English first, then Whisper's. */
export function menuOrder() {
  const first = ['zh', 'en', 'yue'];
  return [...first, ...LANGUAGES.map(([code]) => code).filter((code) => !first.includes(code))];
}

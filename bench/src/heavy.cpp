// Heavy C++ translation unit for the cache-hit benchmark: ten standard headers, <regex> among
// them, and code that instantiates a fair part of them.
#include <algorithm>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

namespace bench {

struct Token {
    std::string kind;
    std::string text;
};

std::vector<Token> tokenize(const std::string &line)
{
    static const std::regex re(R"((\d+)|([A-Za-z_]\w*)|(\S))");
    std::vector<Token> out;
    for (auto it = std::sregex_iterator(line.begin(), line.end(), re);
         it != std::sregex_iterator(); ++it) {
        const std::smatch &m = *it;
        std::string kind = m[1].matched ? "num" : m[2].matched ? "ident" : "punct";
        out.push_back({kind, m.str()});
    }
    return out;
}

std::map<std::string, int> histogram(const std::vector<Token> &tokens)
{
    std::map<std::string, int> h;
    for (const auto &t : tokens)
        ++h[t.kind];
    return h;
}

std::unordered_map<std::string, std::size_t> word_lengths(const std::string &text)
{
    std::unordered_map<std::string, std::size_t> lengths;
    std::istringstream in(text);
    std::string word;
    while (in >> word)
        lengths.emplace(word, word.size());
    return lengths;
}

std::string report(const std::string &text)
{
    auto tokens = tokenize(text);
    auto h = histogram(tokens);
    std::vector<std::pair<std::string, int>> sorted(h.begin(), h.end());
    std::sort(sorted.begin(), sorted.end(),
              [](const auto &a, const auto &b) { return a.second > b.second; });
    std::ostringstream out;
    for (const auto &[kind, count] : sorted)
        out << kind << '=' << count << '\n';
    auto shared = std::make_shared<std::vector<std::string>>();
    std::function<void(const std::string &)> keep = [shared](const std::string &s) {
        shared->push_back(s);
    };
    for (const auto &[word, len] : word_lengths(text))
        if (len > 3)
            keep(word);
    out << "long words: " << shared->size() << '\n';
    return out.str();
}

} // namespace bench

int bench_main()
{
    std::cout << bench::report("int x = 42 + y * foo(bar, 7);");
    return 0;
}

// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {NoxTest} from "../test/utils/NoxTest.sol";
import {NoxRegistry} from "../src/NoxRegistry.sol";
import {NoxTestToken} from "../src/NoxTestToken.sol";
import {NoxPool} from "../src/NoxPool.sol";
import {NoxCounter} from "../src/NoxCounter.sol";
import {NoxTestDollar} from "../src/NoxTestDollar.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

/// @notice Deploys NoxRegistry (and, unless STAKE_TOKEN is set, a NoxTestToken) and
///         NoxPool (forge deploys and links its Poseidon libraries first), on a local
///         chain a NoxCounter to make private calls to and a NoxTestDollar to pay
///         their fees in (1e9 tUSD minted to the deployer), and prints
///         the addresses as one JSON line prefixed with `NOX_DEPLOYMENT=`.
///         The pool's verifier is built from the development keys, which anyone can
///         recompute and forge proofs with (docs/protocol.md §11.6): the script
///         refuses any chain but a local one (chain id 31337) unless
///         ALLOW_DEVELOPMENT_VERIFIER=1.
/// @dev Parameters come from the environment, with devnet defaults:
///      STAKE_TOKEN (address, default: deploy a test token minting TEST_SUPPLY to the deployer),
///      REGISTRY_ADMIN (default: the broadcaster), MIN_STAKE (1000e18),
///      UNSTAKE_DELAY (60 s on chain id 31337, a day elsewhere), SLASH_BURN_BPS (5000), TEST_SUPPLY (1e9 * 1e18).
///      Run: forge script contracts/script/Deploy.s.sol --rpc-url URL --broadcast --private-key KEY
contract Deploy is NoxTest {
    function run() external returns (string memory json) {
        address tokenAddr = vm.envOr("STAKE_TOKEN", address(0));
        uint256 minStake = vm.envOr("MIN_STAKE", uint256(1000e18));
        // The registry refuses less than a day off the devnet's chain.
        uint256 delay = vm.envOr("UNSTAKE_DELAY", block.chainid == 31337 ? uint256(60) : uint256(1 days));
        uint256 burnBps = vm.envOr("SLASH_BURN_BPS", uint256(5000));
        uint256 supply = vm.envOr("TEST_SUPPLY", uint256(1e9 * 1e18));

        require(delay <= type(uint64).max, "UNSTAKE_DELAY does not fit in 64 bits");
        require(burnBps <= type(uint16).max, "SLASH_BURN_BPS does not fit in 16 bits");
        require(
            block.chainid == 31337 || vm.envOr("ALLOW_DEVELOPMENT_VERIFIER", uint256(0)) == 1,
            "NoxPool's verifier has development keys (forgeable proofs): set ALLOW_DEVELOPMENT_VERIFIER=1 to deploy off a local chain"
        );

        vm.startBroadcast();
        address admin = vm.envOr("REGISTRY_ADMIN", msg.sender);
        if (tokenAddr == address(0)) {
            tokenAddr = address(new NoxTestToken(supply));
        }
        // Both casts are range-checked above; the registry checks the values' bounds.
        // forge-lint: disable-next-line(unsafe-typecast)
        NoxRegistry registry = new NoxRegistry(IERC20(tokenAddr), admin, minStake, uint64(delay), uint16(burnBps));
        NoxPool pool = new NoxPool();
        // A demonstration target for private calls, on local chains only.
        address counter = block.chainid == 31337 ? address(new NoxCounter()) : address(0);
        // A fee token for token-paid private calls, on local chains only.
        address feeToken = block.chainid == 31337 ? address(new NoxTestDollar(1e9 * 1e6)) : address(0);
        vm.stopBroadcast();

        vm.serializeAddress("deployment", "token", tokenAddr);
        vm.serializeAddress("deployment", "admin", admin);
        vm.serializeAddress("deployment", "pool", address(pool));
        vm.serializeAddress("deployment", "executor", address(pool.executor()));
        vm.serializeAddress("deployment", "counter", counter);
        vm.serializeAddress("deployment", "feeToken", feeToken);
        json = vm.serializeAddress("deployment", "registry", address(registry));
        log(string.concat("NOX_DEPLOYMENT=", json));
    }
}
